"""Where things are: regions by postcode prefix, how they nest, and whom an incident concerns.

A region is a name and the prefixes of the postcodes in it. Regions nest by prefix: with
"Comunidad de Madrid" = 28 and "Madrid capital" = 280, the capital lies inside the Comunidad.

- A postcode belongs to *every* region whose prefix it starts with (28013 is in both), not
  only to the most precise one: an incident on the Comunidad concerns 28013 too.
- A region concerns another when they are the same, or one contains the other: an incident on
  the Comunidad concerns someone who follows the capital, and one in the capital concerns
  someone who follows the whole Comunidad.
- An incident with no region concerns everywhere; one with no component concerns every service.
- Someone who follows components and regions is concerned by an incident that touches one of
  their components *in* one of their places; following neither means following everything.

The status page's lookup applies the same rules in its script (templates/website/index.html).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


def normal_postcode(code: str) -> str:
    """A postcode as prefixes are written: upper case, no spaces."""
    return code.strip().upper().replace(" ", "")


@dataclass(frozen=True)
class Places:
    """The configured regions, by name, with their postcode prefixes."""

    prefixes: Mapping[str, tuple[str, ...]]

    @classmethod
    def of(cls, regions: Iterable[object]) -> Places:
        """From `[[regions]]` settings (anything with `name` and `postcodes`)."""
        return cls({r.name.casefold(): tuple(r.postcodes) for r in regions})  # type: ignore[attr-defined]

    def regions_of(self, postcode: str) -> list[str]:
        """Every region (casefolded name) that `postcode` belongs to."""
        code = normal_postcode(postcode)
        return [name for name, prefixes in self.prefixes.items() if any(code.startswith(p) for p in prefixes)]

    def contains(self, outer: str, inner: str) -> bool:
        """Whether region `outer` contains region `inner` (every prefix of it starts in `outer`)."""
        mine, theirs = self.prefixes.get(outer.casefold(), ()), self.prefixes.get(inner.casefold(), ())
        return bool(mine and theirs) and all(any(t.startswith(m) for m in mine) for t in theirs)

    def concern(self, a: str, b: str) -> bool:
        """Whether an incident on region `a` concerns region `b`, or the other way round."""
        return a.casefold() == b.casefold() or self.contains(a, b) or self.contains(b, a)

    def covers(self, region: str, postcode: str) -> bool:
        """Whether `postcode` lies in `region`."""
        code = normal_postcode(postcode)
        return any(code.startswith(p) for p in self.prefixes.get(region.casefold(), ()))

    def touches(self, incident_regions: Sequence[str], regions: Sequence[str] = (),
                postcodes: Sequence[str] = ()) -> bool:
        """Whether an incident on `incident_regions` concerns these regions or postcodes."""
        if not incident_regions or (not regions and not postcodes):
            return True
        return (any(self.concern(i, r) for i in incident_regions for r in regions)
                or any(self.covers(i, p) for i in incident_regions for p in postcodes))


def touches_components(incident_components: Sequence[str], followed: Sequence[str]) -> bool:
    """Whether an incident on these components concerns someone following `followed`."""
    if not incident_components or not followed:
        return True
    mine = {c.casefold() for c in followed}
    return any(c.casefold() in mine for c in incident_components)
