"""Webmail sessions: the server side of the `__Host-mss_session` cookie.

The cookie carries 256 random bits; the table keeps only their SHA-256, so a copy of
the database (a backup, a read-only leak) opens no session. A session ends after
`idle` seconds without a request or `max_age` seconds after the login, whichever comes
first (`[web] session_idle`, `session_max`), and at logout (the row is deleted).
The CSRF token of the session's forms lives in the same row.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy import bindparam, delete, or_, select, update

from mssmail.store.driversql import driver_for
from mssmail.store.models import WebSession

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from mssmail.store.service import Store

T = TypeVar("T")

# Every page reads its session: one statement built once, on a Core connection (the
# ORM's session and identity map were 0.4 ms of a folder page's CPU, measured).
_BY_HASH = select(WebSession.token_hash, WebSession.mailbox, WebSession.csrf, WebSession.created,
                  WebSession.last_seen, WebSession.auth_level).where(WebSession.token_hash == bindparam("digest"))

# `last_seen` is written at most this often: a page of ten requests is one write,
# and the idle timeout is still exact to within this many seconds.
TOUCH_EVERY = timedelta(seconds=30)


@dataclass(frozen=True)
class WebSessionInfo:
    mailbox: str
    csrf: str
    created: datetime
    last_seen: datetime
    auth_level: str


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def create_session(store: Store, mailbox: str, *, ip: str = "", auth_level: str = "password",
                   idle: float, max_age: float) -> tuple[str, WebSessionInfo]:
    """A new session for `mailbox` after a successful login: (cookie token, info).
    Expired rows of every user are swept in the same transaction (cheap: indexed on
    nothing but small, one row per open browser)."""
    token = secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    info = WebSessionInfo(mailbox, secrets.token_urlsafe(32), now, now, auth_level)
    with store.db.write() as s:
        s.execute(delete(WebSession).where(or_(WebSession.last_seen < now - timedelta(seconds=idle),
                                               WebSession.created < now - timedelta(seconds=max_age))))
        s.add(WebSession(token_hash=token_hash(token), mailbox=mailbox, created=now, last_seen=now,
                         csrf=info.csrf, ip=ip[:64], auth_level=auth_level))
    return token, info


def session_for(store: Store, token: str, *, idle: float, max_age: float,
                connection: Connection | None = None) -> WebSessionInfo | None:
    """The live session of a cookie token, its `last_seen` moved to now; None (and the
    row deleted) when it is unknown or expired. Read on `connection` when given (the
    webmail's folder page reads the session and the page on one connection: a
    connection's BEGIN and ROLLBACK were a tenth of the page's samples, py-spy)."""
    if not token or len(token) > 100:
        return None
    digest = token_hash(token)
    now = datetime.now(UTC)
    with contextlib.nullcontext(connection) if connection is not None else store.db.engine.connect() as c:
        driver = driver_for(c)
        rows = driver.select_rows(c, _BY_HASH, {"digest": digest}) if driver is not None else \
            c.execute(_BY_HASH, {"digest": digest}).all()
    if not rows:
        return None
    found, mailbox, csrf, created, seen, auth_level = rows[0]
    if not hmac.compare_digest(found, digest):
        return None
    if now - seen > timedelta(seconds=idle) or now - created > timedelta(seconds=max_age):
        end_session(store, token)
        return None
    if now - seen >= TOUCH_EVERY:
        with store.db.write() as s:
            s.execute(update(WebSession).where(WebSession.token_hash == digest).values(last_seen=now))
        seen = now
    return WebSessionInfo(mailbox, csrf, created, seen, auth_level)


def session_then(store: Store, token: str, *, idle: float, max_age: float, level: str,
                 then: Callable[[WebSessionInfo, Connection], T]) -> tuple[WebSessionInfo | None, T | None]:
    """`session_for`, then `then(info, connection)` on the same connection when the
    session is at `level`: (info, its result), or (info or None, None). For a page read
    in one trip to the thread pool and one connection (webmail's folder page)."""
    with store.db.engine.connect() as connection:
        info = session_for(store, token, idle=idle, max_age=max_age, connection=connection)
        if info is None or info.auth_level != level:
            return info, None
        return info, then(info, connection)


def end_session(store: Store, token: str) -> None:
    """Logout: the row goes, so the cookie is worth nothing even if the browser keeps it."""
    with store.db.write() as s:
        s.execute(delete(WebSession).where(WebSession.token_hash == token_hash(token)))


def end_sessions_of(store: Store, mailbox: str) -> int:
    """Every session of a mailbox (password changed, mailbox disabled): how many ended."""
    with store.db.write() as s:
        result = s.execute(delete(WebSession).where(WebSession.mailbox == mailbox))
    return int(getattr(result, "rowcount", 0) or 0)


def raise_session(store: Store, token: str, auth_level: str) -> tuple[str, WebSessionInfo] | None:
    """The session after its second factor: a new token and CSRF token at `auth_level`,
    the old row gone (a token seen before the code, e.g. on a shared computer, is worth
    nothing after it). The login time is kept: `session_max` counts from the password.
    None when the old token is unknown."""
    digest = token_hash(token)
    new_token = secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    with store.db.write() as s:
        row = s.execute(select(WebSession).where(WebSession.token_hash == digest)).scalar_one_or_none()
        if row is None:
            return None
        info = WebSessionInfo(row.mailbox, secrets.token_urlsafe(32), row.created, now, auth_level)
        s.add(WebSession(token_hash=token_hash(new_token), mailbox=row.mailbox, created=row.created,
                         last_seen=now, csrf=info.csrf, ip=row.ip, auth_level=auth_level))
        s.delete(row)
    return new_token, info
