"""Component factories for `mss serve`: the MX and the submission listeners.

With `workers = 0` (the default) a listener runs on the serve process's event loop;
with `workers = N` it is a pool of N SMTP worker processes, to which `mss serve` hands
each connection it accepts (`workers.py`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mssmail import limits
from mssmail.smtp.handlers import MxHandler, SubmissionHandler
from mssmail.smtp.server import SmtpListener
from mssmail.tls import server_context

if TYPE_CHECKING:
    from mssmail.service import ServerContext
    from mssmail.smtp.workers import WorkerPool


def _counted(ctx: ServerContext, name: str, handler: Any, gateway: Any) -> Any:
    """In the serve process (no gateway given: the handler's own LocalGateway), admission uses
    the process's connection counters (mssmail/limits.py), shared with IMAP and LDAP; an SMTP
    worker asks the serve process, whose template listener counts for it."""
    if gateway is None:
        handler.gateway.gate = limits.of(ctx).listener(name)
    return handler


def mx_listener(ctx: ServerContext, gateway: Any = None) -> SmtpListener:
    config = ctx.config
    tls = server_context(config, request_client_cert=config.trust.require_client_cert)
    return SmtpListener("smtp", ctx, _counted(ctx, "smtp", MxHandler(ctx, gateway), gateway), port=config.smtp.port,
                        bind=config.bind_of(config.smtp), tls_context=tls, auth=False)


def submission_listener(ctx: ServerContext, gateway: Any = None) -> SmtpListener:
    config = ctx.config
    handler = _counted(ctx, "submission", SubmissionHandler(ctx, gateway), gateway)
    return SmtpListener("submission", ctx, handler, port=config.submission.port,
                        bind=config.bind_of(config.submission), tls_context=server_context(config),
                        auth=True)


def _component(ctx: ServerContext, section: Any, make_listener: Callable[[ServerContext], SmtpListener],
               ) -> SmtpListener | WorkerPool | None:
    """The listener of `section` (port 0: none), in worker processes when it asks for them."""
    if not section.port:
        return None
    if section.workers:
        from mssmail.smtp.workers import WorkerPool

        return WorkerPool(make_listener(ctx), section.workers)
    return make_listener(ctx)


def mx_component(ctx: ServerContext) -> SmtpListener | WorkerPool | None:
    return _component(ctx, ctx.config.smtp, mx_listener)


def submission_component(ctx: ServerContext) -> SmtpListener | WorkerPool | None:
    return _component(ctx, ctx.config.submission, submission_listener)
