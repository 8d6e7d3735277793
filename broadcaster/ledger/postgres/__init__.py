"""The shared ledger: PostgreSQL, for a team on several machines (`[state] url`)."""

from broadcaster.ledger.postgres.ledger import Pool, PostgresLedger
from broadcaster.ledger.postgres.schema import SCHEMA_VERSION

__all__ = ["SCHEMA_VERSION", "Pool", "PostgresLedger"]
