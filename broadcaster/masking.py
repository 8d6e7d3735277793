"""Secrets never reach a screen, a log or the ledger: every message we keep goes through `mask`."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import SecretStr

MASK = "********"


def mask(text: str, secrets: Iterable[SecretStr]) -> str:
    """Replace every secret value in `text` (platform errors sometimes echo tokens)."""
    for secret in secrets:
        value = secret.get_secret_value()
        if len(value) >= 4:  # masking a one-letter "secret" would garble the message
            text = text.replace(value, MASK)
    return text


def secrets_in_environment() -> list[SecretStr]:
    """Values of every channel secret set in the environment, to mask errors raised early."""
    import os

    from broadcaster import registry

    names = {v for c in registry.channels().values() for v in c.spec.secrets.values()}
    names.add("BROADCASTER_HOOK_SECRET")
    return [SecretStr(os.environ[n]) for n in sorted(names) if os.environ.get(n)]
