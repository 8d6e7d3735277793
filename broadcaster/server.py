"""`broadcaster serve`: the alert hooks, one-click unsubscribe, the subscription pages
(subscription_pages.py), a health check.

FastAPI on uvicorn, with its OpenAPI description at /openapi.json. Hook bodies are read raw
(at most 1 MiB) and their signature checked *before* they are parsed, so nobody unsigned
gets to exercise the parser; the payload models are in the OpenAPI description all the same.
The work itself is hooks.py and the Python API: this module is only HTTP.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, SecretStr, ValidationError

from broadcaster import defaults, hooks
from broadcaster.errors import BroadcasterError, InputError, LedgerBusyError, SettingsError
from broadcaster.settings import Settings

log = logging.getLogger("broadcaster.server")
_ERROR = {"content": {"application/json": {"schema": {
    "type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}}}}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "The body is not JSON, or a field is wrong (the message says which)", **_ERROR},
    401: {"description": "Missing or wrong signature, or a timestamp more than 300 s away", **_ERROR},
    409: {"description": "This signed request was already accepted (a replay)", **_ERROR},
    408: {"description": "The body did not arrive in time (a client that trickles it is cut off)", **_ERROR},
    413: {"description": "The body is over 1 MiB", **_ERROR},
    429: {"description": "Too many alerts from this source or for this key; Retry-After says when", **_ERROR},
}


UNSUBSCRIBE_WAIT = defaults.UNSUBSCRIBE_WAIT
UNSUBSCRIBE_RETRY = defaults.UNSUBSCRIBE_RETRY


def create_app(settings: Settings, secret: SecretStr) -> FastAPI:
    """The server for one settings file and one hook secret."""
    from broadcaster import __version__

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from broadcaster.ledger import kept_connections

        with kept_connections(settings):  # PostgreSQL: a pool, not a connection per request
            yield

    app = FastAPI(title="broadcaster", version=__version__, lifespan=lifespan,
                  description="Alert hooks (drafts for a person to publish), one-click unsubscribe, "
                              "self-service subscription (double opt-in) and preferences.")

    @app.exception_handler(hooks.HookRefused)
    async def _refused(request: Request, exc: hooks.HookRefused) -> JSONResponse:
        return JSONResponse({"error": exc.message}, exc.status)

    _add_hooks(app, settings, secret)
    _add_unsubscribe(app, settings)
    if settings.subscribe_url is not None:
        from broadcaster import subscription_pages

        subscription_pages.add_routes(app, settings, secret, _body_of)

    @app.get("/healthz", summary="Health check for the load balancer")
    async def healthz() -> JSONResponse:
        try:
            await run_in_threadpool(_ledger_readable, settings)
        except Exception as exc:  # the load balancer only needs to know it is not healthy
            log.error("health check failed: %s", exc)
            return JSONResponse({"status": "unavailable"}, 503)
        return JSONResponse({"status": "ok"})

    return app


async def _body_of(request: Request, limit: int = hooks.MAX_BODY) -> bytes:
    """The raw body, at most `limit` bytes, arriving within SERVE_BODY_SECONDS (413, 408)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise hooks.HookRefused(413, f"the body is over {limit} bytes")
    body = bytearray()

    async def read() -> None:
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > limit:
                raise hooks.HookRefused(413, f"the body is over {limit} bytes")

    try:  # a client that trickles its body must not hold a connection for ever
        await asyncio.wait_for(read(), timeout=defaults.SERVE_BODY_SECONDS)
    except TimeoutError:
        seconds = defaults.SERVE_BODY_SECONDS
        raise hooks.HookRefused(408, f"the body did not arrive within {seconds:.0f} s") from None
    return bytes(body)


def _add_hooks(app: FastAPI, settings: Settings, secret: SecretStr) -> None:
    """POST /hooks/{alertmanager,grafana,generic}: signed, once, within the flood limits."""

    async def signed(request: Request, model: type[BaseModel]) -> Any:
        body = await _body_of(request)
        signature = hooks.check_signature(secret, request.headers.get("x-broadcaster-timestamp"),
                                          request.headers.get("x-broadcaster-signature"), body)
        if not await run_in_threadpool(_remember, settings, signature):
            raise hooks.HookRefused(409, "this signed request was already accepted; sign each request anew")
        try:
            return signature, _parsed(body, model)
        except hooks.HookRefused:
            await run_in_threadpool(_forget, settings, signature)  # refused is not accepted
            raise

    flood = hooks.FloodGate(settings.automation)

    async def act(signature: str, alert: hooks.Alert) -> JSONResponse:
        wait = flood.admit(alert)
        if wait is not None:  # not accepted: the sender may send it again once the window allows
            await run_in_threadpool(_forget, settings, signature)
            return JSONResponse({"error": f"too many alerts ({wait.reason}); try again in {wait.seconds} s"},
                                429, headers={"Retry-After": str(wait.seconds)})
        try:
            result = await run_in_threadpool(hooks.handle, alert, settings)
        except InputError as exc:
            await run_in_threadpool(_forget, settings, signature)
            raise hooks.HookRefused(400, str(exc)) from None
        except BroadcasterError as exc:
            log.error("hook failed: %s", exc)
            return JSONResponse({"error": str(exc)}, 503)
        return JSONResponse(result.to_json(), 200)

    def hook(path: str, model: type[BaseModel], summary: str,
             to_alert: Callable[[Any], hooks.Alert]) -> None:
        @app.post(path, summary=summary, responses=_RESPONSES, openapi_extra=_body(model))
        async def receive(
            request: Request,
            x_broadcaster_timestamp: str | None = Header(None, description="Unix seconds"),
            x_broadcaster_signature: str | None = Header(
                None, description='sha256=<hex HMAC-SHA256 of "{timestamp}.{raw body}">'),
        ) -> JSONResponse:
            signature, payload = await signed(request, model)
            return await act(signature, to_alert(payload))

    rules = settings.automation
    hook("/hooks/alertmanager", hooks.AlertmanagerPayload, "Alertmanager webhook (version 4)",
         lambda p: hooks.from_prometheus("alertmanager", p, rules))
    hook("/hooks/grafana", hooks.GrafanaPayload, "Grafana alerting webhook",
         lambda p: hooks.from_prometheus("grafana", p, rules))
    hook("/hooks/generic", hooks.GenericPayload, "Any system: title, message, impact, dedupe_key",
         lambda p: hooks.from_generic(p, rules))


def _add_unsubscribe(app: FastAPI, settings: Settings) -> None:
    """GET /unsubscribe/{token} (a page with a button) and POST (RFC 8058 one-click)."""

    @app.get("/unsubscribe/{token}", response_class=HTMLResponse, summary="Unsubscribe: confirmation page",
             responses={404: {"description": "Unknown token"}})
    async def unsubscribe_page(token: str) -> HTMLResponse:
        from broadcaster.subscriptions import subscriber_of

        subscriber = await run_in_threadpool(subscriber_of, settings, token)
        if subscriber is None:
            return _not_found(settings)
        if not subscriber.active:
            return HTMLResponse(_page(settings, subscriber.locale, "done"))
        return HTMLResponse(_page(settings, subscriber.locale, "confirm", email=subscriber.email,
                                  action=f"/unsubscribe/{token}"))

    @app.post("/unsubscribe/{token}", response_class=PlainTextResponse,
              summary="Unsubscribe (RFC 8058 one-click: no cookies, no redirect)",
              responses={404: {"description": "Unknown token"}})
    async def unsubscribe(token: str, request: Request) -> Response:
        try:
            done = await run_in_threadpool(_unsubscribe, settings, token)
        except (LedgerBusyError, SettingsError) as exc:  # the ledger stayed busy
            log.warning("unsubscribe deferred, the ledger is busy: %s", exc)
            return PlainTextResponse("The service is busy; you are not unsubscribed yet. Try again in a "
                                     "few seconds.\n", 503, headers={"Retry-After": str(UNSUBSCRIBE_RETRY)})
        if done is None:
            return _not_found(settings)
        form = await request.body()
        if b"from=page" in form:  # the button on our own page: answer a person, in their language
            return HTMLResponse(_page(settings, done.locale, "done"))
        return PlainTextResponse("You are unsubscribed: you will not receive more status emails.\n")


def run(settings: Settings, host: str, port: int) -> None:
    """Serve until interrupted; refuse to start without the hook secret."""
    import os

    import uvicorn

    value = os.environ.get(hooks.SECRET_ENV, "")
    if not value:
        raise InputError(f"{hooks.SECRET_ENV} is not set: `serve` refuses to accept unsigned hooks. "
                         "Set it to a long random value shared with your monitoring.")
    if len(value) < defaults.HOOK_SECRET_MIN_LENGTH:
        raise InputError(f"{hooks.SECRET_ENV} is too short: use at least "
                         f"{defaults.HOOK_SECRET_MIN_LENGTH} random characters")
    logging.getLogger("uvicorn.access").addFilter(_HideTokens())
    for name in ("uvicorn.error", "uvicorn.access", "broadcaster.server"):
        logging.getLogger(name).addFilter(_Repeats(defaults.SERVE_LOG_REPEATS_PER_MINUTE))
    _raise_file_limit(defaults.SERVE_MAX_CONNECTIONS + 256)
    uvicorn.run(create_app(settings, SecretStr(value)), host=host, port=port, log_level="info",
                limit_concurrency=defaults.SERVE_MAX_CONNECTIONS,
                h11_max_incomplete_event_size=defaults.SERVE_MAX_HEADER_BYTES,
                timeout_keep_alive=5)


def _raise_file_limit(wanted: int) -> None:
    """Let the process hold `wanted` open files if the hard limit allows (the usual soft
    limit, 1,024, is what a crowd of slow clients exhausted)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


class _Repeats(logging.Filter):
    """At most `per_minute` copies of the same message a minute, then one line with the count:
    a flood of bad requests must not fill the disk with its log (57 MB in 30 s before)."""

    def __init__(self, per_minute: int) -> None:
        super().__init__()
        self.per_minute = per_minute
        self.window = 0
        self.seen: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        import time

        minute = int(time.monotonic() // 60)
        if minute != self.window:
            dropped = sum(n - self.per_minute for n in self.seen.values() if n > self.per_minute)
            self.window, self.seen = minute, {}
            if dropped:
                record.msg = f"({dropped} repeated log lines dropped in the last minute) {record.msg}"
        key = str(record.msg)
        self.seen[key] = self.seen.get(key, 0) + 1
        return self.seen[key] <= self.per_minute


class _HideTokens(logging.Filter):
    """Access logs show /unsubscribe/…, /subscribe/… and /preferences/… without the token."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(re.sub(r"/(unsubscribe|subscribe|preferences)/[^/\s?]+", r"/\1/…", a)
                                if isinstance(a, str) else a for a in record.args)
        return True


# -- the pieces that touch the ledger (run in a worker thread) ---------------------------


def _remember(settings: Settings, signature: str) -> bool:
    from broadcaster.ledger import open_ledger

    with open_ledger(settings) as ledger:
        return hooks.remember(ledger, signature)


def _forget(settings: Settings, signature: str) -> None:
    from broadcaster.ledger import open_ledger

    with open_ledger(settings) as ledger:
        hooks.forget(ledger, signature)


def _parsed(body: bytes, model: type[BaseModel]) -> Any:
    """The body as `model`, or HookRefused(400) naming what is wrong."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise hooks.HookRefused(400, f"the body is not JSON: {exc}") from None
    except RecursionError:
        raise hooks.HookRefused(400, "the body is nested too deeply to be an alert") from None
    try:
        return model.model_validate(data)
    except RecursionError:
        raise hooks.HookRefused(400, "the body is nested too deeply to be an alert") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()[:10]
        )
        raise hooks.HookRefused(400, problems) from None


def _unsubscribe(settings: Settings, token: str) -> Any:
    """The subscriber if the token is known (unsubscribed now or before), else None."""
    from broadcaster.subscriptions import subscriber_of

    subscriber = subscriber_of(settings, token)
    if subscriber is None:
        return None
    from broadcaster.ledger import open_ledger

    # Wait briefly for a busy ledger, then answer 503: a 200 must mean the person is out.
    with open_ledger(settings, busy_wait=UNSUBSCRIBE_WAIT) as ledger:
        ledger.unsubscribe(token=token)
    return subscriber


def _ledger_readable(settings: Settings) -> None:
    from broadcaster.ledger import open_ledger

    with open_ledger(settings, read_only=True) as ledger:
        ledger.ping()


# -- small helpers -------------------------------------------------------------------------


def _not_found(settings: Settings) -> HTMLResponse:
    """The same answer for any unknown token: nothing is revealed."""
    return HTMLResponse(_page(settings, settings.organization.default_locale, "invalid"), 404)


def _page(settings: Settings, locale: str, state: str, **extra: str) -> str:
    """An unsubscribe page in `locale`, with the status site's look (templates/website)."""
    from broadcaster.render import Templates, common_variables

    templates = Templates(settings)
    words = templates.strings(locale)["unsubscribe"]
    heading = {"confirm": words["title"], "done": words["done_title"]}.get(state, words["invalid_title"])
    template = templates.find("website", "unsubscribe", locale, "html")
    return templates.render(template, {**common_variables(templates, locale), "state": state,
                                       "heading": heading, "subscribe": None, **extra})


def _body(model: type[BaseModel]) -> dict[str, Any]:
    """The request body for OpenAPI, with the model's $defs inlined (they cannot be refs here)."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node and node["$ref"].startswith("#/$defs/"):
                return inline(definitions[node["$ref"].rsplit("/", 1)[1]])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return {"requestBody": {"required": True,
                            "content": {"application/json": {"schema": inline(schema)}}}}
