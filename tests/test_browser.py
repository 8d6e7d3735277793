"""The status site in a real headless browser (Debian's chromium): it renders with no console
messages, and the postcode lookup finds the regional incident. Screenshots are kept in
tests/artifacts/.

On a machine without chromium these tests skip and say why; CI installs it and sets
BROADCASTER_REQUIRE_TOOLS=1, so there a missing browser fails instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, Project
from test_places import TELECOM
from test_site import SITE

from broadcaster.site.preview_server import SiteServer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = ROOT / "tests" / "artifacts"
pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("BROADCASTER_REQUIRE_TOOLS"),
    reason="Debian's chromium is not installed (scripts/system-packages chromium)",
)


def browse(url: str, profile: Path, *, screenshot: Path | None = None,
           size: str = "1024,1400", dark: bool = False) -> tuple[str, list[str]]:
    """The DOM after scripts ran, and every console message the page produced (`dark`: as a
    reader whose system prefers the dark colour scheme sees it)."""
    assert CHROMIUM, "chromium is required here (BROADCASTER_REQUIRE_TOOLS is set)"
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
             "--virtual-time-budget=5000", "--hide-scrollbars", f"--window-size={size}",
             *(["--force-dark-mode"] if dark else [])]
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
    ("postcode=28013", "Known problems and planned work in 28013 (Madrid):"),
    ("postcode=08001", "No known problems or planned work in 08001 (Barcelona)."),
    ("postcode=99999", "We do not know that postcode"),
    ("region=Madrid", "Known problems and planned work in Madrid:"),
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
    assert "Problemas conocidos y trabajos programados en 28001 (Madrid):" in result
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




@pytest.fixture
def nested(project: Project) -> Iterator[tuple[Project, str, dict[str, str]]]:
    """A telecom's site: an outage on the whole Madrid region, works under way in Barcelona,
    works tomorrow in Madrid city; served on loopback."""
    from datetime import UTC, datetime, timedelta

    with SiteServer(project.public) as server:
        base = project.config.read_text().replace("https://status.example.com", server.url)
        project.write(TELECOM, base=base)
        now = datetime.now(UTC)
        ids = {"outage": project.announce("--region", "Madrid region", "--component", "Fibre", "--impact",
                                          "major", "--title", "Fibre outage", "--title-es", "Corte de fibra",
                                          "--message-es", "Sin fibra.", "--guidance", "Use mobile data.",
                                          "--guidance-es", "Use los datos móviles.", "--next-update", "1h")}
        for key, region, starts, hours in (("running", "Barcelona", now - timedelta(minutes=5), 3),
                                           ("tomorrow", "Madrid city", now + timedelta(days=1), 2)):
            result = project.cli("maintenance", "schedule", "--title", f"Network works ({key})",
                                 "--title-es", f"Obras en la red ({key})", "--message", "New equipment.",
                                 "--message-es", "Equipos nuevos.", "--region", region,
                                 "--component", "TV", "--starts", starts.isoformat(),
                                 "--ends", (starts + timedelta(hours=hours)).isoformat(), "--yes", "--json")
            assert result.exit_code == 0, result.output
            ids[key] = json.loads(result.stdout)["incident_id"]
        assert project.cli("tick").exit_code == 0  # the Barcelona window has started
        yield project, server.url, ids


@pytest.mark.parametrize("width", ["desktop", "phone"])
def test_the_lookup_answers_for_nested_regions_with_maintenance_in_both_languages(nested, tmp_path, width):
    _, url, ids = nested
    # A phone is 390 px wide; the screenshot is tall so the whole page can be read from it
    # (headless screenshots do not follow a scroll: see the next test for that).
    size = "1024,1400" if width == "desktop" else "390,2400"
    cases = [
        # 28013 lies in Madrid city and in the Madrid region: the region-wide outage concerns it,
        # and so do tomorrow's works in the city.
        ("", "postcode=28013", "Known problems and planned work in 28013 (Madrid region, Madrid city):",
         ["outage", "tomorrow"], ["running"]),
        ("/es", "postcode=28013", "Problemas conocidos y trabajos programados en 28013 (Comunidad de Madrid, "
         "Madrid capital):", ["outage", "tomorrow"], ["running"]),
        # Barcelona: no outage, but works under way, shown as maintenance with their window.
        ("", "postcode=08001", "Known problems and planned work in 08001 (Barcelona):", ["running"],
         ["outage", "tomorrow"]),
        # The whole region includes what happens in the city inside it.
        ("/es", "region=Madrid%20region", "en Comunidad de Madrid:", ["outage", "tomorrow"], ["running"]),
    ]
    for number, (prefix, where, says, listed, absent) in enumerate(cases):
        shot = ARTIFACTS / f"lookup-nested-{'es' if prefix else 'en'}-{width}-{number}.png"
        dom, console = browse(f"{url}{prefix}/#{where}", tmp_path / f"p{number}", screenshot=shot, size=size)
        assert console == [], console
        result = dom.split('id="lookup-result"', 1)[1].split("</div>", 1)[0]
        assert says in result, result
        for key in listed:
            assert f"/incidents/{ids[key]}/" in result, (key, result)
        for key in absent:
            assert f"/incidents/{ids[key]}/" not in result, (key, result)
    dom, _ = browse(f"{url}/#postcode=08001", tmp_path / "last", size=size)
    result = dom.split('id="lookup-result"', 1)[1].split("</div>", 1)[0]
    assert "Maintenance under way" in result and "When:" in result and "CET" in result
    assert "Impact" not in result, "maintenance is not an outage: no impact"


def test_without_javascript_the_area_list_answers_and_maintenance_is_not_an_outage(nested):
    project, _, ids = nested
    index = (project.public / "es" / "index.html").read_text()
    areas = index.split('id="areas"', 1)[1].split("</details>", 1)[0]
    madrid_city = areas.split("Madrid capital", 1)[1].split("<li><strong>", 1)[0]
    assert f"/incidents/{ids['outage']}/" in madrid_city and f"/incidents/{ids['tomorrow']}/" in madrid_city
    barcelona = areas.split("Barcelona", 1)[1]
    assert f"/incidents/{ids['running']}/" in barcelona and f"/incidents/{ids['outage']}/" not in barcelona
    assert "Mantenimiento en curso" in barcelona
    assert "Televisión" in index and "Fibra" in index, "component names in Spanish"
    english = (project.public / "index.html").read_text()
    assert "Fibra" not in english and "Madrid region" in english
    statement = (project.public / "incidents" / ids["running"] / "index.html").read_text()
    assert "Impact" not in statement and "Resolved" not in statement and "badge maintenance" in statement


def test_on_a_phone_the_answer_is_scrolled_into_view_and_focused(nested, tmp_path):
    """A 390 × 844 frame runs the lookup; the probe page reads where the answer ended up."""
    project, url, _ = nested
    (project.public / "probe.html").write_text(
        '<!doctype html><body><iframe id="f" src="/#postcode=08001" width="390" height="844"></iframe>'
        '<script>document.getElementById("f").onload = function () { setTimeout(function () {'
        ' var w = document.getElementById("f").contentWindow;'
        ' var r = w.document.getElementById("lookup-result"), data = document.body.dataset;'
        ' data.scrolled = w.scrollY; data.top = r.getBoundingClientRect().top;'
        ' data.focus = w.document.activeElement.tagName; }, 1500); };</script></body>',
        encoding="utf-8")
    dom, console = browse(f"{url}/probe.html", tmp_path / "probe")
    assert console == [], console
    found = dict(re.findall(r'data-(scrolled|top|focus)="([^"]*)"', dom))
    assert float(found["scrolled"]) > 0, "the page scrolled to the answer"
    assert 0 <= float(found["top"]) < 844, f"the answer is on screen: {found}"
    assert found["focus"] == "H3", "focus moved to the answer, so a screen reader reads it"


@pytest.fixture
def history(project: Project) -> Iterator[tuple[Project, str]]:
    """A site with 90 days of history recorded straight into the ledger (an outage a month ago,
    a degraded day last week, a maintenance, one incident open now), built and served."""
    from datetime import UTC, datetime, time, timedelta
    from zoneinfo import ZoneInfo

    from broadcaster.ledger import open_ledger
    from broadcaster.model import Impact, Kind, Status, Text, Update
    from broadcaster.settings import load_settings

    # Noon in Madrid N days ago, so no period crosses a midnight whatever the hour the test runs.
    noon = datetime.combine(datetime.now(ZoneInfo("Europe/Madrid")).date(), time(12),
                            ZoneInfo("Europe/Madrid")).astimezone(UTC)

    def at(days: int, hours: float) -> datetime:
        return noon - timedelta(days=days) + timedelta(hours=hours)

    past = [("outage", Kind.ANNOUNCE, Impact.CRITICAL, ("Payments API", "Checkout"),
             [(at(30, -3), Status.INVESTIGATING), (at(30, -1 - 40 / 60), Status.RESOLVED)]),
            ("slow", Kind.ANNOUNCE, Impact.MINOR, ("Search",),
             [(at(6, -3), Status.INVESTIGATING), (at(6, 4), Status.RESOLVED)]),
            ("partial", Kind.ANNOUNCE, Impact.MAJOR, ("Payments API",),
             [(at(61, -2), Status.INVESTIGATING), (at(61, -0.75), Status.RESOLVED)]),
            ("works", Kind.MAINTENANCE, Impact.MINOR, ("Checkout",),
             [(at(12, -4), Status.SCHEDULED), (at(12, -2), Status.IN_PROGRESS),
              (at(12, 0), Status.COMPLETED)])]
    with SiteServer(project.public) as server:
        project.write(SITE, base=project.config.read_text().replace("https://status.example.com", server.url))
        settings = load_settings(project.config)
        with open_ledger(settings) as ledger:
            for name, kind, impact, components, steps in past:
                for seq, (moment, status) in enumerate(steps, start=1):
                    ledger.record(Update(f"{name}000000-{seq}", f"{name}000000", seq,
                                         kind if seq == 1 else Kind.UPDATE, status, impact, components, (),
                                         {"en": Text(f"{name.title()} problem", "Words.")}, moment,
                                         starts_at=steps[0][0] if kind is Kind.MAINTENANCE else None,
                                         ends_at=steps[-1][0] if kind is Kind.MAINTENANCE else None), [])
            # The outage's postmortem, the next day, in both languages.
            ledger.record(Update("outage000000-3", "outage000000", 3, Kind.POSTMORTEM, Status.RESOLVED,
                                 Impact.CRITICAL, ("Payments API", "Checkout"), (),
                                 {"en": Text("Outage problem", POSTMORTEM["en"]),
                                  "es": Text("Outage problem", POSTMORTEM["es"])}, at(29, 0)), [])
        project.announce("--component", "Payments API", "--impact", "major")
        assert project.cli("site", "build").exit_code == 0
        yield project, server.url


#: A postmortem as people write them: headings from `#`, a list, a table-less timeline.
POSTMORTEM = {
    "en": "# Summary\n\nFor 1 h 20 min **card payments failed** in every region: a database "
          "failover stalled.\n\n## Timeline\n\n- 09:00 payments start failing.\n"
          "- 10:20 the failover completes.\n\n# What we are changing\n\n1. Failovers are "
          "rehearsed every month.\n2. An alert fires when one takes over a minute.",
    "es": "# Resumen\n\nDurante 1 h 20 min **fallaron los pagos con tarjeta** en todas las "
          "regiones: se atascó el relevo de la base de datos.\n\n## Cronología\n\n- 09:00 empiezan "
          "a fallar los pagos.\n- 10:20 termina el relevo.\n\n# Qué vamos a cambiar\n\n1. Ensayamos "
          "los relevos cada mes.\n2. Salta una alerta si uno tarda más de un minuto.",
}


@pytest.mark.parametrize("width", ["desktop", "phone"])
@pytest.mark.parametrize("locale", ["en", "es"])
def test_the_postmortem_reads_on_the_statement_page(history, tmp_path, locale, width):
    _, url = history
    size = "390,1400" if width == "phone" else "1024,1400"
    prefix = "" if locale == "en" else "/es"
    dom, console = browse(f"{url}{prefix}/incidents/outage000000/", tmp_path / "profile", size=size,
                          screenshot=ARTIFACTS / f"postmortem-{locale}-{width}.png")
    assert console == []
    words = {"en": ("Postmortem", "Published", "What we are changing", "Timeline"),
             "es": ("Análisis del incidente", "Publicado", "Qué vamos a cambiar", "Cronología")}[locale]
    section = re.search(r'<section class="postmortem" id="postmortem"[^>]*>(.*?)</section>', dom, re.S)
    assert section, "the postmortem has its section"
    assert f'<h2 id="postmortem-heading">{words[0]}</h2>' in section.group(1)
    assert words[1] in section.group(1) and f"<h3>{words[2]}</h3>" in section.group(1), \
        "the author's # headings sit under the section's h2"
    assert "<h4>" in section.group(1) and "<h1>" not in section.group(1)
    # After what the incident was, before the timeline; not an entry of the timeline itself.
    assert dom.index('id="postmortem"') < dom.index(f"<h2>{words[3]}</h2>")
    assert dom.count('<li id="update-') == 2
    history_dom, _ = browse(f"{url}{prefix}/history/", tmp_path / "history", size=size)
    assert f'incidents/outage000000/#postmortem">{words[0]}</a>' in history_dom


@pytest.mark.parametrize("width", ["desktop", "phone"])
@pytest.mark.parametrize("locale", ["en", "es"])
def test_the_uptime_bars_show_each_day_with_its_name(history, tmp_path, locale, width):
    _, url = history
    size = "390,1700" if width == "phone" else "1024,1700"
    prefix = "" if locale == "en" else "/es"
    dom, console = browse(f"{url}{prefix}/", tmp_path / "profile", size=size,
                          screenshot=ARTIFACTS / f"uptime-{locale}-{width}.png")
    assert console == []
    bars = re.findall(r'<ol class="uptime" aria-label="[^"]+">(.*?)</ol>', dom, re.S)
    assert len(bars) == 3 and all(bar.count("<li") == 90 for bar in bars)
    payments, checkout, search = bars
    assert payments.count("day-major_outage") == 1, "a month ago"
    assert payments.count("day-partial_outage") == 2, "two months ago, and the incident open now"
    assert checkout.count("day-major_outage") == 1 and checkout.count("day-under_maintenance") == 1
    assert search.count("day-degraded_performance") == 1
    words = {"en": ("Major outage for 1 h 20 min", "% uptime"),
             "es": ("Interrupción grave durante 1 h 20 min", "% disponible")}[locale]
    assert all(w in dom for w in words), words
    # The history tells each incident: impact, how long, its first lines; a component has a page.
    history_dom, console = browse(f"{url}{prefix}/history/", tmp_path / "history", size=size,
                                  screenshot=ARTIFACTS / f"history-{locale}-{width}.png")
    assert console == [] and history_dom.count('class="story"') == 5, "four past, one open"
    lasted = {"en": "lasted 1 h 20 min", "es": "duró 1 h 20 min"}[locale]
    assert lasted in history_dom and "Outage problem" in history_dom
    assert 'class="summary">Words.' in history_dom
    page, console = browse(f"{url}{prefix}/components/payments-api/", tmp_path / "component", size=size,
                           screenshot=ARTIFACTS / f"component-{locale}-{width}.png")
    assert console == [] and page.count('class="story"') == 3, "its three incidents, not Search's"
    assert page.count('class="day day-') == 90


AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
#: Runs axe-core once the page (and the lookup, answering from a #fragment) has settled, and
#: writes the violations into the page for --dump-dom to carry out.
AXE_RUN = """<script src="{src}"></script><script>
setTimeout(function () {{
  axe.run(document, {{resultTypes: ["violations"]}}).then(function (r) {{
    var out = document.createElement("pre"); out.id = "axe-violations"; out.hidden = true;
    out.textContent = JSON.stringify(r.violations.map(function (v) {{
      return {{id: v.id, impact: v.impact, help: v.help,
               nodes: v.nodes.map(function (n) {{
                 return n.target.join(" ") + " :: " + n.failureSummary; }})}};
    }}));
    document.body.appendChild(out);
  }});
}}, 1500);
</script></body>"""


def axe_violations(public: Path, page: str, url: str, profile: Path, fragment: str = "", *,
                   dark: bool = False) -> list[dict]:
    """What axe-core finds wrong on `page` (a file under `public`), served at `url`."""
    if not AXE.exists():
        if os.environ.get("BROADCASTER_REQUIRE_TOOLS"):
            pytest.fail("axe-core is missing: `npm ci` installs it (make test does)")
        pytest.skip("axe-core is not installed (`npm ci`, which make test runs)")
    shutil.copy(AXE, public / "__axe.min.js")
    source = public / page
    checked = source.with_name(source.stem + ".axe.html")
    depth = "../" * (len(Path(page).parts) - 1)
    checked.write_text(source.read_text(encoding="utf-8").replace(
        "</body>", AXE_RUN.format(src=depth + "__axe.min.js")), encoding="utf-8")
    try:
        dom, console = browse(f"{url}/{checked.relative_to(public).as_posix()}{fragment}", profile, dark=dark)
    finally:
        checked.unlink()
    found = re.search(r'<pre id="axe-violations" hidden="">(.*?)</pre>', dom, re.S)
    assert found, f"axe-core did not run on {page}: {console}"
    import html

    return json.loads(html.unescape(found.group(1)))


def _no_violations(found: dict[str, list[dict]]) -> None:
    problems = [f"{name}: {v['id']} ({v['impact']}): {v['help']}\n      " + "\n      ".join(v["nodes"][:5])
                for name, violations in found.items() for v in violations]
    assert not problems, "axe-core found:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("locale", ["en", "es"])
def test_axe_core_finds_no_violations_on_the_pages(history, tmp_path, locale, scheme):
    project, url = history
    prefix = "" if locale == "en" else "es/"
    statement = project.public / prefix / "incidents" / "outage000000"  # with its postmortem
    month = next(p for p in (project.public / prefix / "history").iterdir() if p.is_dir())
    pages = {"index": f"{prefix}index.html", "statement": f"{prefix}incidents/{statement.name}/index.html",
             "history": f"{prefix}history/index.html", "month": f"{prefix}history/{month.name}/index.html",
             "component": f"{prefix}components/payments-api/index.html"}
    dark = scheme == "dark"
    _no_violations({name: axe_violations(project.public, page, url, tmp_path / name, dark=dark)
                    for name, page in pages.items()})
    if dark:  # what a reader in the dark scheme sees, for a person to look at
        for name in ("index", "statement"):
            browse(f"{url}/{pages[name]}", tmp_path / f"shot-{name}", dark=True, size="1024,1500",
                   screenshot=ARTIFACTS / f"dark-{name}-{locale}.png")


@pytest.mark.parametrize("locale", ["en", "es"])
def test_axe_core_finds_no_violations_in_the_lookups_answer(nested, tmp_path, locale):
    project, url, _ = nested
    page = "index.html" if locale == "en" else "es/index.html"
    _no_violations({"lookup answer": axe_violations(project.public, page, url, tmp_path / "p", "#28013")})


class Keyboard:
    """A headless Chromium driven over the DevTools protocol: real key presses, as a person
    with only a keyboard makes them (Tab to move, typing, Enter)."""

    def __init__(self, url: str, profile: Path, size: str = "390,900") -> None:
        self.url, self.profile, self.size = url, profile, size

    def __enter__(self) -> Keyboard:
        import contextlib

        self.stack = contextlib.ExitStack()
        try:
            self._open()
        except BaseException:
            self.stack.close()
            raise
        return self

    def _open(self) -> None:
        import urllib.request

        from websockets.sync.client import connect

        url, profile, size = self.url, self.profile, self.size
        assert CHROMIUM, "chromium is required here (BROADCASTER_REQUIRE_TOOLS is set)"
        self.browser = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--remote-debugging-port=0", f"--user-data-dir={profile}",
             f"--window-size={size}", "about:blank"], stderr=subprocess.PIPE, text=True)
        self.stack.callback(self._stop)  # whatever fails below, the browser goes
        assert self.browser.stderr is not None
        port = ""
        for line in self.browser.stderr:
            if "DevTools listening on" in line:
                port = line.split("127.0.0.1:", 1)[1].split("/", 1)[0]
                break
        import threading  # keep reading what it logs, so a full pipe never stalls it

        threading.Thread(target=lambda: [None for _ in self.browser.stderr], daemon=True).start()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/json/new?{url}", method="PUT")
        with urllib.request.urlopen(request, timeout=30) as answer:  # loopback only
            target = json.loads(answer.read())
        self.socket = self.stack.enter_context(connect(target["webSocketDebuggerUrl"], max_size=None))
        self.ids = 0
        self.call("Runtime.enable")
        # The new tab starts on about:blank, which is already "complete": wait for the page asked
        # for, or a test may read an empty document (it did, on CI and here, before this wait).
        self.wait_for("location.href !== 'about:blank' && document.readyState === 'complete'")

    def __exit__(self, *exc: object) -> None:
        self.stack.close()

    def _stop(self) -> None:
        self.browser.terminate()
        self.browser.wait(timeout=30)
        if self.browser.stderr:
            self.browser.stderr.close()

    def call(self, method: str, **params: object) -> dict:
        self.ids += 1
        self.socket.send(json.dumps({"id": self.ids, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=30))
            if message.get("id") == self.ids:
                assert "error" not in message, message
                return message.get("result", {})

    def value(self, expression: str) -> object:
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def wait_for(self, expression: str, seconds: float = 20) -> None:
        import time

        deadline = time.monotonic() + seconds
        while not self.value(expression):
            assert time.monotonic() < deadline, f"never true: {expression}"
            time.sleep(0.05)

    def press(self, key: str, code: int) -> None:
        for kind in ("rawKeyDown", "keyUp"):
            self.call("Input.dispatchKeyEvent", type=kind, key=key, code=key, windowsVirtualKeyCode=code,
                      nativeVirtualKeyCode=code)
        if key == "Enter":
            self.call("Input.dispatchKeyEvent", type="char", text="\r", key="Enter")

    def type(self, text: str) -> None:
        self.call("Input.insertText", text=text)



@pytest.mark.parametrize("locale", ["en", "es"])
def test_the_lookup_works_with_the_keyboard_alone(nested, tmp_path, locale):
    _, url, ids = nested
    with Keyboard(f"{url}{'' if locale == 'en' else '/es'}/", tmp_path / "profile") as page:
        for _ in range(40):  # Tab from the top of the page until the postcode field has focus
            page.press("Tab", 9)
            if page.value("document.activeElement.id") == "postcode":
                break
        assert page.value("document.activeElement.id") == "postcode", "the field is reachable by Tab"
        assert page.value("getComputedStyle(document.activeElement).outlineStyle") != "none", \
            "the focused field shows it"
        page.type("28013")
        page.press("Enter", 13)
        page.wait_for("document.getElementById('lookup-result').textContent.length > 0")
        answer = page.value("document.getElementById('lookup-result').textContent")
        outage = {"en": "Fibre outage", "es": "Corte de fibra"}[locale]
        assert outage in answer and ids["outage"] in page.value(
            "document.getElementById('lookup-result').innerHTML")
        page.wait_for("document.getElementById('lookup-result').contains(document.activeElement)")
        page.press("Tab", 9)  # and on, by keyboard, to the statement the answer links
        assert page.value("document.activeElement.tagName") == "A"


#: Every element that shows a state or a status by its colour, and the sign it shows besides it
#: (CSS `::before` content: "none" or "normal" when it has none).
SIGNS = """JSON.stringify(Array.from(document.querySelectorAll(
  '.badge, .overall, [class*="state-"]')).map(function (e) {
    return [e.className, e.textContent.trim(), getComputedStyle(e, '::before').content]; }))"""


@pytest.mark.parametrize("locale", ["en", "es"])
def test_every_state_has_a_sign_besides_its_colour(history, tmp_path, locale):
    """Colour alone must not tell an outage from a fix in progress (WCAG 1.4.1): every badge,
    banner and component state on the index and on an incident's and a maintenance's statement
    shows a sign before its words."""
    _, url = history
    prefix = "" if locale == "en" else "/es"
    seen: list[list[str]] = []
    for page in ("/", "/incidents/outage000000/", "/incidents/works000000/", "/history/"):
        with Keyboard(f"{url}{prefix}{page}", tmp_path / page.strip("/").replace("/", "-")) as browser:
            seen += json.loads(str(browser.value(SIGNS)))
    classes = " ".join(name for name, _, _ in seen)
    for status in ("status-investigating", "status-resolved", "status-scheduled", "status-in_progress",
                   "status-completed", "state-operational", "state-partial_outage", "overall"):
        assert status in classes, f"the pages show a {status}, so this test looks at one"
    unsigned = [(name, words) for name, words, sign in seen if sign in ("none", "normal", "")]
    assert unsigned == [], f"shown by colour alone: {unsigned}"
