"""One HTTP session for the API clients the channels wrap.

tweepy and facebook-sdk both build URLs from a hard-coded host (`https://api.twitter.com`,
`https://graph.facebook.com/`) and neither sets a timeout, but both accept a replaceable
`requests.Session`. This session points the hard-coded host at the configured `api_base`
(a proxy, or a local stand-in in the drill and the tests) and gives every request a timeout,
so a hung platform becomes a transient error instead of a hung command. It keeps the last
response, because facebook-sdk throws the HTTP status away and the status is what says
whether a failure is worth retrying.
"""

from __future__ import annotations

import email.utils
import time
from typing import Any

import requests


class ApiSession(requests.Session):
    """A `requests.Session` that rewrites `real_base` to `api_base` and sets a timeout."""

    def __init__(self, real_base: str, api_base: str, timeout: float) -> None:
        super().__init__()
        self.real_base = real_base.rstrip("/")
        self.api_base = api_base.rstrip("/")
        self.timeout = timeout
        self.last_response: requests.Response | None = None
        # No proxies or .netrc from the environment: credentials go only where api_base says.
        self.trust_env = False

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        url = url.decode() if isinstance(url, bytes) else url
        if url.startswith(self.real_base):
            url = self.api_base + url[len(self.real_base):]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        self.last_response = None
        response = super().request(method, url, *args, **kwargs)
        self.last_response = response
        return response


def network_problem(exc: requests.RequestException) -> str:
    """Describe a network failure without the URL (whose query may hold a token)."""
    kind = "timed out" if isinstance(exc, requests.Timeout) else "connection failed"
    request = getattr(exc, "request", None)
    host = ""
    if request is not None and request.url:
        host = " to " + requests.utils.urlparse(request.url).netloc
    return f"{kind}{host} ({type(exc).__name__})"


def retry_after(value: str | None) -> float | None:
    """The time a `Retry-After` header names (seconds, or an HTTP date), if it names one."""
    if not value:
        return None
    if value.strip().isdigit():
        return time.time() + int(value)
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
