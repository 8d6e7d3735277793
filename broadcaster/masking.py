"""Secrets never reach a screen, a log or the ledger: every message we keep goes through `mask`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pydantic is not imported to read the ledger (see tests/test_startup.py)
    from pydantic import SecretStr

MASK = "********"


def mask(text: str, secrets: Iterable[SecretStr]) -> str:
    """Replace every secret value in `text` (platform errors sometimes echo tokens)."""
    for secret in secrets:
        value = secret.get_secret_value()
        if len(value) >= 4:  # masking a one-letter "secret" would garble the message
            text = text.replace(value, MASK)
    return text


#: Secrets that belong to no channel: the hook server's key, the shared ledger's password.
OTHER_SECRETS = ("BROADCASTER_HOOK_SECRET", "BROADCASTER_STATE_PASSWORD", "PGPASSWORD")


def secret_variables() -> list[str]:
    """Every environment variable that holds a secret the settings know of: every installed
    channel's (enabled or not) and the others. All are masked, none reaches a child process."""
    from broadcaster import registry

    names = {v for c in registry.channels().values() for v in c.spec.secrets.values()}
    return sorted(names.union(OTHER_SECRETS))


def secrets_in_environment(environ: Mapping[str, str] | None = None) -> list[SecretStr]:
    """Values of every known secret set in the environment, to mask anything we print or keep."""
    import os

    from pydantic import SecretStr

    environ = os.environ if environ is None else environ
    return [SecretStr(environ[n]) for n in secret_variables() if environ.get(n)]


def without_secrets(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` without any known secret: what a child process (publish_command) gets."""
    secret = set(secret_variables())
    return {k: v for k, v in environ.items() if k not in secret}
