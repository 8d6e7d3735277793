"""`broadcaster serve`'s subscription pages: the form's answer, confirmation, preferences.

HTTP only; what each step does is `subscriptions.py`. Every page is the status site's look in
the visitor's language (templates/website/subscription.html). Bodies are read raw, at most
16 KiB, and parsed here (no multipart: the forms are urlencoded). A POST that acts on a token
needs the CSRF key of the page that showed it, and is refused when the browser says it comes
from another site (Sec-Fetch-Site).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse
from pydantic import SecretStr

from broadcaster import defaults, subscriptions
from broadcaster.errors import BroadcasterError, InputError, SettingsError
from broadcaster.settings import Settings

log = logging.getLogger("broadcaster.server")

_PAGE = {404: {"description": "Unknown or malformed token (the same page for any)"}}


def add_routes(app: FastAPI, settings: Settings, secret: SecretStr,
               body_of: Any) -> None:
    """POST /subscribe, GET and POST /subscribe/{token}, GET and POST /preferences/{token}."""
    keys = subscriptions.Keys.derive(secret)
    default = settings.organization.default_locale

    def page(locale: str, state: str, status: int = 200, *, headers: dict[str, str] | None = None,
             **extra: Any) -> HTMLResponse:
        return HTMLResponse(render(settings, locale, state, **extra), status, headers=headers)

    @app.exception_handler(_Unavailable)
    async def busy(request: Request, exc: _Unavailable) -> HTMLResponse:
        """The ledger or the mail server failed: nothing was done, come back in a minute."""
        log.error("%s failed: %s", exc.what, exc.cause)
        return page(exc.locale, "busy", 503, headers={"Retry-After": "60"})

    async def call(locale: str, what: str, work: Any, *args: Any, **kwargs: Any) -> Any:
        """`work(settings, …)` in a worker thread; a failing ledger or mail server (a
        SettingsError is the ledger that could not be opened) becomes the busy page, 503."""
        try:
            return await run_in_threadpool(work, settings, *args, **kwargs)
        except InputError as exc:
            if isinstance(exc, SettingsError):
                raise _Unavailable(locale, what, exc) from None
            raise
        except BroadcasterError as exc:
            raise _Unavailable(locale, what, exc) from None

    async def form_of(request: Request) -> dict[str, list[str]]:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/x-www-form-urlencoded":
            raise InputError("send the form as application/x-www-form-urlencoded")
        return subscriptions.parse_form(await body_of(request, defaults.SUBSCRIBE_MAX_BODY))

    def locale_of(fields: dict[str, list[str]]) -> str:
        wanted = (fields.get("locale") or [""])[0]
        return wanted if wanted in settings.organization.locales else default

    @app.post("/subscribe", response_class=HTMLResponse, summary="The status pages' subscription form",
              responses={400: {"description": "The form is wrong (the page says what)"},
                         413: {"description": "The body is over 16 KiB"},
                         429: {"description": "Too many requests from this IP or for this address"},
                         503: {"description": "The ledger or the mail server is busy; nothing done"}})
    async def subscribe(request: Request) -> HTMLResponse:
        fields: dict[str, list[str]] = {}
        try:
            fields = await form_of(request)
            ip = request.client.host if request.client else ""
            asked = await call(locale_of(fields), "subscription request", subscriptions.ask, fields,
                               ip=ip, keys=keys, page_locale=locale_of(fields))
        except subscriptions.Limited as exc:
            minutes = str(max(1, round(exc.seconds / 60)))
            return page(locale_of(fields), "limited", 429, headers={"Retry-After": str(exc.seconds)},
                        minutes=minutes)
        except InputError as exc:
            return page(locale_of(fields), "bad", 400, problem=str(exc), subscribe_open=True)
        return page(asked.locale, "sent", email=asked.email, hours=_hours(settings))

    @app.get("/subscribe/{token}", response_class=HTMLResponse, responses=_PAGE,
             summary="Confirm a subscription: a page with a button (a GET changes nothing)")
    async def confirm_page(token: str) -> HTMLResponse:
        found = await call(default, "reading a confirmation link", subscriptions.confirmation, token)
        return confirmation_page(found, token)

    @app.post("/subscribe/{token}", response_class=HTMLResponse,
              responses={**_PAGE, 403: {"description": "Not from the page we served (CSRF)"}},
              summary="Confirm a subscription (the button)")
    async def confirm(token: str, request: Request) -> HTMLResponse:
        found = await call(default, "reading a confirmation link", subscriptions.confirmation, token)
        if found.state != "confirm":
            return confirmation_page(found, token)
        try:
            fields = await form_of(request)
        except InputError:
            fields = {}
        if _forged(request, fields, keys, "confirm", token) is not None:
            stale = subscriptions.words(settings, _locale(found))["stale"]
            return confirmation_page(found, token, status=403, notice=stale)
        done = await call(_locale(found), "confirmation", subscriptions.confirm, token)
        return confirmation_page(done, token)

    def confirmation_page(found: subscriptions.Confirmation, token: str, *, status: int = 200,
                          notice: str = "") -> HTMLResponse:
        if found.request is None:
            return page(default, "invalid", 404)
        choice = found.request.subscriber
        extra: dict[str, Any] = {"email": choice.email, "follows": _follows(settings, choice),
                                 "hours": _hours(settings)}
        if found.state == "confirm":
            extra.update(action=f"/subscribe/{token}", csrf=keys.form_key("confirm", token))
        return page(choice.locale, found.state, status, notice=notice, **extra)

    @app.get("/preferences/{token}", response_class=HTMLResponse, responses=_PAGE,
             summary="Manage a subscription: language and what to follow, or leave")
    async def preferences_page(token: str) -> HTMLResponse:
        return preferences(await call(default, "reading preferences", subscriptions.subscriber_of, token),
                           token)

    @app.post("/preferences/{token}", response_class=HTMLResponse,
              responses={**_PAGE, 400: {"description": "The form is wrong (the page says what)"},
                         403: {"description": "Not from the page we served (CSRF)"}},
              summary="Save a subscriber's choices")
    async def save(token: str, request: Request) -> HTMLResponse:
        subscriber = await call(default, "reading preferences", subscriptions.subscriber_of, token)
        if subscriber is None or not subscriber.active:
            return preferences(subscriber, token)
        try:
            fields = await form_of(request)
            if _forged(request, fields, keys, "preferences", token) is not None:
                return preferences(subscriber, token, status=403,
                                   notice=subscriptions.words(settings, subscriber.locale)["stale"])
            saved = await call(subscriber.locale, "saving preferences", subscriptions.save_preferences,
                               token, fields)
        except InputError as exc:
            return preferences(subscriber, token, status=400, notice=str(exc))
        notice = subscriptions.words(settings, saved.locale)["saved"] if saved else ""
        return preferences(saved, token, notice=notice)

    def preferences(subscriber: Any, token: str, *, status: int = 200, notice: str = "") -> HTMLResponse:
        if subscriber is None:
            return page(default, "invalid", 404)
        if not subscriber.active:
            return page(subscriber.locale, "left", status)
        from broadcaster.render import subscription_form

        words = subscriptions.words(settings, subscriber.locale)
        return page(subscriber.locale, "preferences", status, notice=notice, email=subscriber.email,
                    heading=words["preferences_title"], action=f"/preferences/{token}",
                    leave_action=f"/unsubscribe/{token}", csrf=keys.form_key("preferences", token),
                    choices=subscription_form(settings, subscriber.locale) or {"groups": [], "regions": []},
                    chosen={"locale": subscriber.locale, "components": subscriber.components,
                            "regions": subscriber.regions, "postcodes": subscriber.postcodes})


class _Unavailable(Exception):
    """A route's work failed on the ledger or the mail server (answered with the busy page)."""

    def __init__(self, locale: str, what: str, cause: Exception) -> None:
        super().__init__(what)
        self.locale, self.what, self.cause = locale, what, cause


def _forged(request: Request, fields: dict[str, list[str]], keys: subscriptions.Keys, purpose: str,
            token: str) -> str | None:
    """Why this POST is not from the page we served (None when it is)."""
    if request.headers.get("sec-fetch-site", "") == "cross-site":
        return "sent from another site"
    key = (fields.get("csrf") or [""])[0]
    return None if keys.form_key_valid(key, purpose, token) else "no valid CSRF key"


def render(settings: Settings, locale: str, state: str, **extra: Any) -> str:
    """A subscription page in `locale` (the form on the footer only where it helps)."""
    from broadcaster.render import Templates, common_variables

    templates = Templates(settings)
    words = templates.strings(locale)["subscribe"]
    variables = common_variables(templates, locale)
    if state not in ("bad", "sent", "limited", "busy", "expired", "invalid", "left"):
        variables["subscribe"] = None  # a page about one subscription: no second form on it
    heading = extra.pop("heading", None) or words.get(f"{state}_title") or words["invalid_title"]
    variables.update({"state": state, "heading": heading, "notice": "", **extra})
    template = templates.find("website", "subscription", locale, "html")
    return templates.render(template, variables)


def _locale(found: subscriptions.Confirmation) -> str:
    return found.request.subscriber.locale if found.request else ""


def _hours(settings: Settings) -> str:
    return f"{settings.subscriptions.confirm_hours:g}"


def _follows(settings: Settings, choice: Any) -> str:
    locale = choice.locale
    return ", ".join([*settings.labels(choice.components, locale), *settings.labels(choice.regions, locale),
                      *choice.postcodes])
