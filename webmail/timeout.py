"""Session expiry as the browser sees it (issue 14: idle `[web] session_idle`,
absolute `[web] session_max`, "a warning 2 minutes before").

The server decides (mssmail/store/websessions.py deletes an expired row on the next
request, which then goes to `/connexion?suite=...`). Every page tells the browser how
many seconds its session has left (`data-session-fin` on `<body>`) and which limit
that is; `static/session.js` shows the `role="alert"` warning `WARN_BEFORE` seconds
before, offers "Rester connecté" (a GET of `/session`, which counts as activity)
unless the absolute limit is the near one, and at the end reloads the page, so the
server's answer (the login page, or the page itself if another tab kept the session
alive) is what the doctor sees.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

if TYPE_CHECKING:
    from mssmail.store.websessions import WebSessionInfo
    from webmail.app import Webmail

WARN_BEFORE = 120  # seconds


def time_left(session: WebSessionInfo, idle: float, max_age: float,
              now: datetime | None = None) -> tuple[int, str]:
    """(seconds before the session ends, "inactivite" or "max": which limit ends it).
    Counted from `last_seen` as stored (touched at most every 30 s), so the browser
    never believes in more time than the server will give."""
    now = now or datetime.now(UTC)
    idle_end = (session.last_seen - now).total_seconds() + idle
    max_end = (session.created - now).total_seconds() + max_age
    if max_end <= idle_end:
        return max(0, int(max_end)), "max"
    return max(0, int(idle_end)), "inactivite"


def page_context(webmail: Webmail, context: dict[str, Any]) -> dict[str, Any]:
    """What base.html needs for the warning, for a page with a logged-in session."""
    session = context.get("session")
    if session is None or not hasattr(session, "last_seen"):
        return {}
    left, limit = time_left(session, webmail.idle, webmail.max_age)
    return {"session_left": left, "session_limit": limit, "session_warn": WARN_BEFORE}


async def keepalive(request: Request) -> Response:
    """`/session`: "Rester connecté". Reading the session is the activity that
    moves its idle deadline; the answer is the new time left (JSON), or 401 (and
    `HX-Redirect` to the login page) when it has ended already."""
    webmail: Webmail = request.app.state.webmail
    session = await webmail.session(request)
    if session is None:
        return JSONResponse({"fin": 0}, status_code=401, headers={"HX-Redirect": "/connexion"})
    left, limit = time_left(session, webmail.idle, webmail.max_age)
    return JSONResponse({"fin": left, "limite": limit})
