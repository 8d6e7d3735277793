"""schemathesis against the live OpenAPI description: no input makes the server fail.

The hooks are tried twice over: as schemathesis sends them (unsigned, so 401), and signed
with the right secret, so that generated bodies reach the parser and the alert rules.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import requests
import schemathesis
from conftest import Project
from hypothesis import HealthCheck, given, settings
from test_server import Server, start

from broadcaster.hooks import sign

SECRET = "test-hook-secret-0123456789abcdef"


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    project = Project(tmp_path_factory.mktemp("fuzz"))
    project.write()
    yield from start(project)


def send(case, server: Server) -> requests.Response:
    """The generated request, signed byte for byte when it has a body."""
    kwargs = case.as_transport_kwargs(base_url=server.url)
    if "json" in kwargs:
        raw = json.dumps(kwargs.pop("json")).encode()
        stamp = str(int(time.time()))
        kwargs["headers"] = {**(kwargs.get("headers") or {}), "Content-Type": "application/json",
                             "X-Broadcaster-Timestamp": stamp,
                             "X-Broadcaster-Signature": sign(SECRET, stamp, raw)}
        kwargs["data"] = raw
    return requests.request(**kwargs, timeout=60)


def test_no_generated_input_is_a_server_error(live_server: Server) -> None:
    loaded = schemathesis.openapi.from_url(live_server.url + "/openapi.json")
    operations = [result.ok() for result in loaded.get_all_operations()]
    assert len(operations) == 6
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def no_server_error(case) -> None:
            answer = send(case, live_server)
            assert answer.status_code < 500, \
                f"{case.method} {case.formatted_path}: {answer.status_code} {answer.text[:500]}"

        no_server_error()
