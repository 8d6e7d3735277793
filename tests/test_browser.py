"""The status site in a real headless browser (Debian's chromium): it renders with no console
messages, and the postcode lookup finds the regional incident. Screenshots are kept in
tests/artifacts/.

On a machine without chromium these tests skip and say why; CI installs it and sets
BROADCASTER_REQUIRE_TOOLS=1, so there a missing browser fails instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, Project
from test_site import SITE

from broadcaster.site_server import SiteServer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = ROOT / "tests" / "artifacts"
pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("BROADCASTER_REQUIRE_TOOLS"),
    reason="Debian's chromium is not installed (scripts/system-packages chromium)",
)


def browse(url: str, profile: Path, *, screenshot: Path | None = None,
           size: str = "1024,1400") -> tuple[str, list[str]]:
    """The DOM after scripts ran, and every console message the page produced."""
    assert CHROMIUM, "chromium is required here (BROADCASTER_REQUIRE_TOOLS is set)"
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
             "--virtual-time-budget=5000", f"--window-size={size}"]
    done = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([*flags, f"--screenshot={screenshot}", url], capture_output=True, timeout=120,
                       check=True)
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return done.stdout, console


@pytest.fixture
def served(project: Project) -> Iterator[tuple[Project, str, str]]:
    """A site with a Madrid incident, served on loopback; (project, base url, incident id)."""
    with SiteServer(project.public) as server:
        project.write(SITE, base=project.config.read_text().replace(
            "https://status.example.com", server.url))
        incident = project.announce("--region", "Madrid", "--component", "Payments API",
                                    "--impact", "major", "--title-es", "Fallan los pagos",
                                    "--message-es", "Fallan los pagos con tarjeta.",
                                    "--guidance", "Pay by transfer for now.",
                                    "--guidance-es", "Pague por transferencia por ahora.")
        yield project, server.url, incident


def test_index_and_statement_render_with_no_console_messages(served, tmp_path):
    _, url, incident = served
    index, console = browse(url + "/", tmp_path / "p1", screenshot=ARTIFACTS / "index.png")
    assert console == [], console
    assert "Some services have problems" in index and "Partial outage" in index
    statement, console = browse(f"{url}/es/incidents/{incident}/", tmp_path / "p2",
                                screenshot=ARTIFACTS / "statement-es.png")
    assert console == [], console
    assert "Fallan los pagos con tarjeta." in statement and 'lang="es"' in statement
    assert (ARTIFACTS / "index.png").stat().st_size > 1000


@pytest.mark.parametrize("width", ["desktop", "phone"])
def test_the_statement_puts_the_current_guidance_first_in_each_language(served, tmp_path, width: str):
    project, url, incident = served
    result = project.cli("update", incident, "--status", "identified", "--message", "A gateway certificate "
                         "expired.", "--message-es", "Caducó un certificado de la pasarela.",
                         "--next-update", "30m", "--yes")
    assert result.exit_code == 0, result.output
    size = "1024,1000" if width == "desktop" else "390,844"
    pages = (("en", "", "What you can do now", "Pay by transfer"),
             ("es", "/es", "Qué puede hacer ahora", "Pague por transferencia"))
    for locale, prefix, guidance, words in pages:
        dom, console = browse(f"{url}{prefix}/incidents/{incident}/", tmp_path / f"{locale}-{width}",
                              screenshot=ARTIFACTS / f"statement-{locale}-{width}.png", size=size)
        assert console == [], console
        assert words in dom and guidance in dom, "the guidance carried over from the announcement"
        assert dom.index(guidance) < dom.index('class="timeline"'), "the guidance comes before the timeline"


@pytest.mark.parametrize(("where", "says"), [
    ("postcode=28013", "Known problems affecting Madrid:"),
    ("postcode=08001", "No known problems in Barcelona."),
    ("postcode=99999", "We do not know that postcode"),
    ("region=Madrid", "Known problems affecting Madrid:"),
])
def test_the_lookup_finds_the_regional_incident(served, tmp_path, where: str, says: str):
    _, url, incident = served
    dom, console = browse(f"{url}/#{where}", tmp_path / "profile")
    assert console == [], console
    result = dom.split('id="lookup-result"', 1)[1].split("</div>", 1)[0]
    assert says in result
    assert (f"/incidents/{incident}/" in result) == says.startswith("Known problems")


def test_the_lookup_in_spanish_links_the_spanish_statement(served, tmp_path):
    _, url, incident = served
    dom, console = browse(f"{url}/es/#postcode=28001", tmp_path / "profile",
                          screenshot=ARTIFACTS / "lookup-es.png")
    assert console == []
    result = dom.split('id="lookup-result"', 1)[1].split("</div>", 1)[0]
    assert "Problemas conocidos que afectan a Madrid:" in result
    assert f"/es/incidents/{incident}/" in result and "Fallan los pagos" in result


def test_the_console_check_does_see_console_messages(tmp_path):
    """Keeps the 'no console messages' checks above honest: a page that logs is caught."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "noisy.html").write_text("<!doctype html><title>x</title><script>console.log('seen-it');"
                                     "undefinedFunction();</script>", encoding="utf-8")
    with SiteServer(site) as server:
        _, console = browse(server.url + "/noisy.html", tmp_path / "profile")
    assert any("seen-it" in line for line in console)
    assert any("undefinedFunction" in line for line in console)
