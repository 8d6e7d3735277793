"""The embedded ledger: one SQLite file beside its lock files (the default, for one machine)."""

from broadcaster.ledger.sqlite.ledger import SQLiteLedger
from broadcaster.ledger.sqlite.schema import SCHEMA_VERSION

__all__ = ["SCHEMA_VERSION", "SQLiteLedger"]
