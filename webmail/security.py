"""The headers every webmail response carries, and the two CSRF walls.

CSRF (OWASP's "defence in depth"): a request that changes something must
1. come from our own pages: the middleware refuses unsafe methods whose
   `Sec-Fetch-Site` (Fetch Metadata, sent by every current browser) is not
   `same-origin`, or whose `Origin` is not ours; it needs no body, so it runs first;
2. carry the session's token in the form: checked in `read_form`, the one helper every
   POST handler parses its form with (a middleware that read the body would leave the
   endpoint an empty form: Starlette's request body is a one-time stream).
Before login there is no session: the login form's token is a random cookie value
repeated in the form (double submit), the cookie being `__Host-` and SameSite=Strict.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

from starlette.datastructures import FormData, MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Issue 14, "Security": no inline script or style anywhere on app pages.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
       "connect-src 'self'; form-action 'self'; frame-src 'self'; frame-ancestors 'none'; "
       "base-uri 'none'; object-src 'none'")
# The frame of an HTML mail: opaque origin (sandbox without allow-same-origin), no
# script, no network; inline CSS is the mail's own and can reach nothing.
FRAME_CSP = ("sandbox allow-popups allow-popups-to-escape-sandbox; default-src 'none'; "
             "style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'")
DOWNLOAD_CSP = "sandbox; default-src 'none'"

BASE_HEADERS = {
    "strict-transport-security": "max-age=31536000",
    "x-content-type-options": "nosniff",
    # Not no-referrer: Chromium then sends `Origin: null` on same-origin form POSTs.
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
}
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
EXPIRED_TEXT = "La page a expiré. Rechargez-la et recommencez."
MAX_FORM_FIELDS = 50
MAX_FIELD_SIZE = 64 * 1024


class CsrfRefused(Exception):
    """A form without the right token: answered 403 with EXPIRED_TEXT, nothing done."""


def same_origin(scope: Scope) -> bool:
    """Fetch Metadata and Origin agree that the request comes from our own pages.
    Requests with neither header (a script, an old browser) pass here and still need
    the form's token."""
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
    site = headers.get("sec-fetch-site")
    if site is not None and site != "same-origin":
        return False
    origin = headers.get("origin")
    if origin is not None:
        host = headers.get("host", "")
        scheme = scope.get("scheme", "https")
        return bool(host) and origin == f"{scheme}://{host}"
    return True


class SecurityMiddleware:
    """Pure ASGI (no body buffering): the origin wall, then the headers on every
    response. A response may set its own CSP (the mail frame, downloads) and
    Cache-Control (static files); everything else is `no-store`: pages of a shared
    practice computer stay out of its disk cache."""

    def __init__(self, app: ASGIApp, forbidden: Callable[[Request], Response]) -> None:
        self.app = app
        self.forbidden = forbidden

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in BASE_HEADERS.items():
                    headers[name] = value
                headers.setdefault("content-security-policy", CSP)
                headers.setdefault("cache-control", "no-store")
            await send(message)

        if scope["method"] not in SAFE_METHODS and not same_origin(scope):
            response = self.forbidden(Request(scope, receive))
            await response(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)


def token_matches(given: Any, expected: str) -> bool:
    return isinstance(given, str) and bool(expected) and hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode())


async def read_form(request: Request, expected_token: str) -> FormData:
    """The one way a handler reads a form: bounded, and refused (CsrfRefused) unless its
    `csrf` field is the session's token (or the login cookie's, before login)."""
    form = await request.form(max_files=0, max_fields=MAX_FORM_FIELDS, max_part_size=MAX_FIELD_SIZE)
    if not token_matches(form.get("csrf"), expected_token):
        raise CsrfRefused
    return form
