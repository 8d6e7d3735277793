"""What every stand-in shares: a threaded werkzeug server on loopback, and scripted faults.

A fault is queued for an endpoint and consumed by the next request to it, so a test says
exactly what goes wrong and when: "the next post times out", "the next two answer 503".
`drop="after"` is the one that matters most: the platform acts, then the connection dies
before the answer arrives, which is how a post ends up existing without the sender knowing.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map
from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler
from werkzeug.wrappers import Request, Response

HTML_502 = (
    "<html><head><title>502 Bad Gateway</title></head>"
    "<body><center><h1>502 Bad Gateway</h1></center></body></html>"
)


@dataclass(frozen=True)
class Fault:
    """One misbehaviour, applied to one request."""

    #: Answer with this status (and `body`) instead of acting.
    status: int | None = None
    body: str | Mapping[str, Any] = ""
    #: Headers of the answer, or a function that makes them when the request arrives (a
    #: rate-limit reset is relative to then, not to when the test scripted the fault).
    headers: Mapping[str, str] | Callable[[], Mapping[str, str]] = field(default_factory=dict)
    #: Seconds to wait before acting (a platform slow to start).
    delay: float = 0.0
    #: Seconds to wait after acting, before answering (longer than the client's timeout:
    #: the post exists but the client times out).
    answer_delay: float = 0.0
    #: Close the connection without an answer, before acting or after acting.
    drop: Literal["before", "after"] | None = None

    def response(self) -> Response:
        headers = dict(self.headers() if callable(self.headers) else self.headers)
        if isinstance(self.body, Mapping):
            return Response(json.dumps(self.body), self.status or 500, headers,
                            content_type="application/json; charset=utf-8")
        return Response(self.body, self.status or 500, headers, content_type="text/html")

    @classmethod
    def html_502(cls) -> Fault:
        """A proxy's HTML error page, as load balancers send when the platform is down."""
        return cls(status=502, body=HTML_502)

    @classmethod
    def latency(cls, seconds: float) -> Fault:
        """A slow answer: the platform acts at once, the answer comes `seconds` later."""
        return cls(answer_delay=seconds)

    @classmethod
    def lost_answer(cls) -> Fault:
        """The platform acts, then the connection drops before the answer is sent."""
        return cls(drop="after")

    @classmethod
    def dropped(cls) -> Fault:
        """The connection drops before the platform acts."""
        return cls(drop="before")


@dataclass(frozen=True)
class Seen:
    """One request as the stand-in saw it."""

    method: str
    path: str
    endpoint: str
    status: int | str
    fault: Fault | None
    at: float = field(default_factory=time.monotonic)
    #: Wall-clock time of arrival, to compare with times the stand-in sent (a rate-limit reset).
    wall: float = field(default_factory=time.time)
    #: The answer's headers (empty for a dropped connection).
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass
class RateWindow:
    """A platform's fixed rate-limit window: `limit` posts per `seconds`, then refusals until
    it resets. Each stand-in sends the figures in its platform's own headers."""

    limit: int
    seconds: float
    used: int = 0
    reset: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        self.reset = time.time() + self.seconds

    def spend(self) -> bool:
        """Count one post; False (and nothing counted) once the window's posts are spent."""
        if time.time() >= self.reset:
            self.reset, self.used = time.time() + self.seconds, 0
        if self.used >= self.limit:
            return False
        self.used += 1
        return True

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)


class _Dropped(ConnectionAbortedError):
    """Raised inside the app so werkzeug treats the connection as gone and sends nothing."""


class _QuietHandler(WSGIRequestHandler):
    def log(self, type: str, message: str, *args: Any) -> None:
        if type == "error":
            self.server.errors.append(message % args if args else message)  # type: ignore[attr-defined]


class StandIn:
    """A local HTTP server for one platform's API. Subclasses declare `url_map` and handlers."""

    url_map: ClassVar[Map]
    name: ClassVar[str] = "stand-in"

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.seen: list[Seen] = []
        self._faults: dict[str, deque[Fault]] = {}
        self._server: ThreadedWSGIServer | None = None
        self._thread: threading.Thread | None = None

    # -- scripting -----------------------------------------------------------------------

    def fail(self, endpoint: str, *faults: Fault) -> None:
        """Queue `faults` for the next requests to `endpoint`, one each."""
        if endpoint not in {rule.endpoint for rule in self.url_map.iter_rules()}:
            raise ValueError(f"{self.name} has no endpoint {endpoint!r}")
        with self.lock:
            self._faults.setdefault(endpoint, deque()).extend(faults)

    def calls(self, endpoint: str) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.endpoint == endpoint]

    # -- serving -------------------------------------------------------------------------

    def start(self, port: int = 0) -> StandIn:
        server = ThreadedWSGIServer("127.0.0.1", port, self, _QuietHandler)
        server.errors = []  # type: ignore[attr-defined]
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), name=self.name,
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> StandIn:
        return self.start() if self._server is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the stand-in first"
        return f"http://127.0.0.1:{self._server.server_port}"

    @property
    def errors(self) -> list[str]:
        """Tracebacks of handler bugs (a test should expect none)."""
        return list(self._server.errors) if self._server else []  # type: ignore[attr-defined]

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        request.get_data()  # read (and cache) the body now, so a dropped connection leaves none behind
        try:
            endpoint, args = self.url_map.bind_to_environ(environ).match()
        except HTTPException:
            return self.not_found(request)(environ, start_response)
        refusal = self.authenticate(request)
        if refusal is not None:
            self._record(request, endpoint, refusal.status_code, None)
            return refusal(environ, start_response)
        with self.lock:
            queue = self._faults.get(endpoint)
            fault = queue.popleft() if queue else None
        if fault and fault.delay:
            time.sleep(fault.delay)
        if fault and fault.drop == "before":
            self._record(request, endpoint, "dropped", fault)
            _drop(environ)
        if fault and fault.status is not None:
            response = fault.response()
        else:
            response = getattr(self, f"on_{endpoint}")(request, **args)
        # Recorded as soon as the platform has acted, whatever happens to the answer.
        dropping = fault is not None and fault.drop == "after"
        self._record(request, endpoint, f"{response.status_code}, dropped" if dropping
                     else response.status_code, fault, dict(response.headers))
        if fault and fault.answer_delay:
            time.sleep(fault.answer_delay)
        if dropping:
            _drop(environ)
        return response(environ, start_response)

    def authenticate(self, request: Request) -> Response | None:
        """The platform's refusal of a request's credentials, or None to let it through."""
        return None

    def not_found(self, request: Request) -> Response:
        """The platform's answer to a path it does not have."""
        return json_response({"error": f"no route {request.method} {request.path}"}, 404)

    def _record(self, request: Request, endpoint: str, status: int | str, fault: Fault | None,
                headers: Mapping[str, str] | None = None) -> None:
        with self.lock:
            self.seen.append(Seen(request.method, request.path, endpoint, status, fault,
                                  headers=dict(headers or {})))


def _drop(environ: dict[str, Any]) -> None:
    sock: socket.socket = environ["werkzeug.socket"]
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    raise _Dropped("connection dropped by a scripted fault")


def arguments(request: Request) -> dict[str, Any]:
    """A request's parameters as a platform reads them: a JSON object body, or the form and
    query string (what is not an object, or not JSON, is no parameters at all)."""
    if request.mimetype == "application/json":
        try:
            body = json.loads(request.get_data(as_text=True))
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}
    return {**request.args.to_dict(), **request.form.to_dict()}


def json_response(body: Mapping[str, Any], status: int = 200,
                  headers: Mapping[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status, dict(headers or {}),
                    content_type="application/json; charset=utf-8")
