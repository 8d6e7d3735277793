"""What the benchmarks share: the organisation they all run as, and a free loopback port."""

from __future__ import annotations

import socket

#: The settings every benchmark starts from (each adds its own sections).
ORGANIZATION = """
[organization]
name = "Example Corp"
timezone = "Europe/Madrid"
locales = ["en", "es"]

[site]
base_url = "https://status.example.com"
output_dir = "public"

[state]
path = "state.db"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
