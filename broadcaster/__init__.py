"""broadcaster: announce a service incident once, on your own site first, then everywhere.

The Python API (the CLI is a thin layer over it):

    from broadcaster import announce, update, resolve, publish, retry, load_settings

Names are imported on first use, so `import broadcaster` (and `broadcaster --help`) stays fast.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = {
    "announce": "broadcaster.api",
    "update": "broadcaster.api",
    "resolve": "broadcaster.api",
    "postmortem": "broadcaster.api",
    "publish": "broadcaster.api",
    "discard": "broadcaster.api",
    "retry": "broadcaster.api",
    "list_incidents": "broadcaster.api",
    "show": "broadcaster.api",
    "recipients": "broadcaster.api",
    "tick": "broadcaster.api",
    "worker": "broadcaster.api",
    "schedule_maintenance": "broadcaster.api",
    "cancel_maintenance": "broadcaster.api",
    "reschedule_maintenance": "broadcaster.api",
    "build_site": "broadcaster.api",
    "migrate_state": "broadcaster.api",
    "export_state": "broadcaster.api",
    "import_state": "broadcaster.api",
    "import_subscribers": "broadcaster.api",
    "add_subscriber": "broadcaster.api",
    "remove_subscriber": "broadcaster.api",
    "list_subscribers": "broadcaster.api",
    "create_app": "broadcaster.server",
    "Cancelled": "broadcaster.api",
    "load_settings": "broadcaster.settings",
    "Settings": "broadcaster.settings",
    "Outcome": "broadcaster.outcome",
    "Impact": "broadcaster.model",
    "Status": "broadcaster.model",
}

__all__ = [*_API, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'broadcaster' has no attribute {name!r}")
