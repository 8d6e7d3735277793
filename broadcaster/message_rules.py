"""What a good incident message says, checked before it goes out.

A message can be delivered perfectly and still fail its readers: a resolution of a long
outage that says "Fixed." and nothing else, an announcement that tells people nothing they
can do. These rules catch that before anything is sent. Each one names the practice it comes
from:

- seed 000 (the source essay on apologising): acknowledge, apologise, explain, tell people
  what to do meanwhile (TweetDeck's "log out for now"), and follow up;
- Atlassian's incident communication guidance (Statuspage templates): every open-incident
  update promises when the next one comes, and the promise is kept;
- PagerDuty's incident response guide ("External Communication"): say what customers can do
  now, and at resolution own the impact;
- a message in several languages reaches each reader whole in their own.

A rule either refuses (exit 2, nothing sent) or warns (shown in the preview and in
`--json`). Only one rule refuses: the apology, which cannot be added after the fact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from broadcaster.model import Impact, Incident, Kind, Update

#: Impacts whose resolution must apologise and whose announcement should guide.
SERIOUS = (Impact.MAJOR, Impact.CRITICAL)
#: Phones show about this many characters of a subject in the inbox list (iOS Mail and
#: Gmail show 35–45 on a 390 px screen, desktop clients about 70): past it, what follows is
#: lost, so the place and service come first (see templates/email/subject.txt).
SUBJECT_LIMIT = 70
#: The fields a translation should have whenever the default locale has them.
TRANSLATED_FIELDS = ("title", "guidance", "apology")


@dataclass(frozen=True)
class Findings:
    """What the rules found: refusals stop the update, warnings are shown."""

    refusals: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


def review(
    update: Update, incident: Incident, *, default_locale: str, subjects: Sequence[tuple[str, str]] = (),
    drafting: bool = False,
) -> Findings:
    """Check `update` (about to be sent, or drafted, as part of `incident`).

    `subjects` are the email subjects rendered for it, as (locale, subject). A draft is only
    warned: the person who publishes it is refused.
    """
    refusals: list[str] = []
    warnings: list[str] = []
    words = update.text(default_locale)
    serious = incident.max_impact in SERIOUS and not incident.is_maintenance

    # Seed 000 and PagerDuty: a serious incident is closed with an apology.
    if update.kind is Kind.RESOLVE and serious and not words.apology.strip() and not update.apology_waived:
        problem = (f"resolving a {incident.max_impact.value} incident without an apology: add --apology "
                   "(seed 000: acknowledge and apologise), or pass --no-apology if that is deliberate")
        (warnings if drafting else refusals).append(problem)

    # Seed 000 (TweetDeck's example) and PagerDuty: tell people what they can do meanwhile.
    if update.kind is Kind.ANNOUNCE and update.impact in SERIOUS and not words.guidance.strip():
        warnings.append(f"a {update.impact.value} incident announced without --guidance: tell customers "
                        "what they can do until it is fixed")

    # Atlassian: an open incident always says when people will hear more.
    if update.kind in (Kind.ANNOUNCE, Kind.UPDATE) and update.next_update_at is None:
        warnings.append("no --next-update: say when customers will hear from you again "
                        "(e.g. --next-update 30m)")

    # Every reader gets the whole message in their own language, not a silent fallback.
    for locale, own in update.texts.items():
        if locale == default_locale:
            continue
        for field in TRANSLATED_FIELDS:
            if getattr(words, field).strip() and not getattr(own, field).strip():
                warnings.append(f"no {field} in {locale!r}: readers in {locale!r} will see the "
                                f"{default_locale!r} {field} (give --{field}-{locale})")

    # Phones cut long subjects: what matters must come first and the whole should be short.
    for locale, subject in subjects:
        if len(subject) > SUBJECT_LIMIT:
            warnings.append(f"email subject ({locale}) is {len(subject)} characters; phones show about "
                            f"{SUBJECT_LIMIT} or fewer: shorten the title")
    return Findings(tuple(refusals), tuple(dict.fromkeys(warnings)))
