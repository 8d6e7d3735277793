"""`broadcaster state`: migrate, export and import, and the input they refuse."""

from __future__ import annotations

import json

from conftest import Project


def test_an_export_never_overwrites_a_file(project: Project):
    project.announce()
    (project.root / "taken.jsonl").write_text("mine\n")
    result = project.cli("state", "export", str(project.root / "taken.jsonl"))
    assert result.exit_code == 2 and "taken.jsonl exists; export to a new file" in result.output
    assert (project.root / "taken.jsonl").read_text() == "mine\n"
    assert not list(project.root.glob(".taken.jsonl.partial")), "no half-written file is left"


def test_an_import_needs_an_empty_ledger(project: Project):
    incident = project.announce()
    assert project.cli("state", "export", str(project.root / "out.jsonl")).exit_code == 0
    result = project.cli("state", "import", str(project.root / "out.jsonl"))
    assert result.exit_code == 2
    assert "already holds incidents or subscribers; import into an empty one" in result.output
    listed = json.loads(project.cli("list", "--json").stdout)
    assert [i["id"] for i in listed] == [incident], "nothing was added"


def test_a_file_that_is_not_an_export_is_refused_before_any_ledger_is_made(project: Project):
    (project.root / "notes.txt").write_text("hello\n")
    result = project.cli("state", "import", str(project.root / "notes.txt"))
    assert result.exit_code == 2 and "notes.txt:1: not JSON" in result.output
    missing = project.cli("state", "import", str(project.root / "nowhere.jsonl"))
    assert missing.exit_code == 2 and "nowhere.jsonl: cannot read the export" in missing.output
    assert not project.has_ledger()


def test_a_bad_row_imports_nothing_and_names_its_line(project: Project, tmp_path):
    source = Project(tmp_path / "source")
    source.root.mkdir()
    source.write()
    source.announce()
    export = tmp_path / "out.jsonl"
    assert source.cli("state", "export", str(export)).exit_code == 0
    lines = export.read_text().splitlines()
    lines[2] = json.dumps({"table": "updates", "row": {"id": "x"}})
    export.write_text("\n".join(lines) + "\n")
    result = project.cli("state", "import", str(export))
    assert result.exit_code == 2
    assert "out.jsonl:3: a updates row needs exactly id, incident_id, seq" in result.output
    assert json.loads(project.cli("list", "--json").stdout) == [], "all or nothing"


def test_migrate_reports_the_store_and_its_schema(project: Project):
    store = "postgresql" if project.url else "sqlite"
    first = json.loads(project.cli("state", "migrate", "--json").stdout)
    assert (first["store"], first["migrated"], first["schema_before"]) == (store, True, 0)
    again = project.cli("state", "migrate")
    assert f"{store} ledger at" in again.stdout and "nothing to do" in again.stdout
