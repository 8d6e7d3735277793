"""The map in ARCHITECTURE.md, checked: no import cycles, and the storage wall holds."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from conftest import ROOT

#: Only the ledger's stores speak SQL (sql.py is what they share), each driver only in its own.
STORES = ("broadcaster.ledger.sql", "broadcaster.ledger.sqlite", "broadcaster.ledger.postgres")
DRIVERS = {"sqlite3": "broadcaster.ledger.sqlite", "psycopg": "broadcaster.ledger.postgres",
           "psycopg_pool": "broadcaster.ledger.postgres"}
SQL = re.compile(r"\b(SELECT\b.+\bFROM|INSERT\s+(OR\s+\w+\s+)?INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|"
                 r"CREATE\s+(TABLE|INDEX)|PRAGMA)\b", re.S)


def modules() -> dict[str, Path]:
    """Every module of the installed package by its dotted name (channels/ is broadcaster.channels)."""
    found = {}
    roots = ((ROOT / "broadcaster", ("broadcaster",)), (ROOT / "channels", ("broadcaster", "channels")))
    for folder, prefix in roots:
        for path in folder.rglob("*.py"):
            parts = [*prefix, *path.relative_to(folder).with_suffix("").parts]
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The project's modules `path` imports anywhere (in functions too), except for type checking."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {id(node) for top in ast.walk(tree)
                   if isinstance(top, ast.If) and "TYPE_CHECKING" in ast.unparse(top.test)
                   for statement in top.body for node in ast.walk(statement)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.update(f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                         for a in node.names)
    return {name for name in found if name in known}


def test_no_module_imports_one_that_imports_it_back():
    known = modules()
    graph = {name: imports(path, known) - {name} for name, path in known.items()}
    cycles = []

    def visit(name: str, trail: list[str]) -> None:
        for nxt in sorted(graph[name]):
            if nxt in trail:
                cycles.append(" → ".join([*trail[trail.index(nxt):], nxt]))
            elif nxt not in seen:
                seen.add(nxt)
                visit(nxt, [*trail, nxt])

    seen: set[str] = set()
    for start in sorted(graph):
        if start not in seen:
            seen.add(start)
            visit(start, [start])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_only_the_ledger_stores_speak_sql_and_each_driver_stays_in_its_store():
    known = modules()
    offenders = []
    for name, path in known.items():
        store = name.startswith(STORES)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                for imported in names:
                    home = DRIVERS.get(imported.split(".")[0])
                    if home and not name.startswith(home):
                        offenders.append(f"{name}:{node.lineno} imports {imported}")
                    if imported.startswith(STORES) and not store and name != "broadcaster.ledger":
                        offenders.append(f"{name}:{node.lineno} imports {imported} (use open_ledger)")
            elif (not store and isinstance(node, ast.Constant) and isinstance(node.value, str)
                  and SQL.search(node.value)):
                offenders.append(f"{name}:{node.lineno} writes SQL: {node.value[:60]!r}")
    assert not offenders, "\n".join(offenders)


def test_the_architecture_map_names_every_package_and_module_that_exists():
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    missing = [name for name, path in modules().items()
               if path.name != "__init__.py" or name.count(".") > 1
               if f"`{path.relative_to(ROOT).as_posix()}`" not in text
               and f"`{path.parent.relative_to(ROOT).as_posix()}/`" not in text]
    assert not missing, f"ARCHITECTURE.md does not place: {', '.join(sorted(missing))}"
