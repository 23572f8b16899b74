"""Component factories for `mss serve`: the MX and the submission listeners.

With `workers = 0` (the default) a listener runs on the serve process's event loop;
with `workers = N` it is a pool of N SMTP worker processes sharing one listening
socket (`workers.py`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mssmail.smtp.handlers import MxHandler, SubmissionHandler
from mssmail.smtp.server import SmtpListener
from mssmail.tls import server_context

if TYPE_CHECKING:
    from mssmail.service import ServerContext
    from mssmail.smtp.workers import WorkerPool


def mx_listener(ctx: ServerContext, gateway: Any = None) -> SmtpListener:
    config = ctx.config
    tls = server_context(config, request_client_cert=config.trust.require_client_cert)
    return SmtpListener("smtp", ctx, MxHandler(ctx, gateway), port=config.smtp.port,
                        bind=config.bind_of(config.smtp), tls_context=tls, auth=False)


def submission_listener(ctx: ServerContext, gateway: Any = None) -> SmtpListener:
    config = ctx.config
    return SmtpListener("submission", ctx, SubmissionHandler(ctx, gateway), port=config.submission.port,
                        bind=config.bind_of(config.submission), tls_context=server_context(config),
                        auth=True)


def mx_component(ctx: ServerContext) -> SmtpListener | WorkerPool | None:
    config = ctx.config
    if not config.smtp.port:
        return None
    if config.smtp.workers:
        from mssmail.smtp.workers import WorkerPool

        return WorkerPool(mx_listener(ctx), config.smtp.workers)
    return mx_listener(ctx)


def submission_component(ctx: ServerContext) -> SmtpListener | WorkerPool | None:
    config = ctx.config
    if not config.submission.port:
        return None
    if config.submission.workers:
        from mssmail.smtp.workers import WorkerPool

        return WorkerPool(submission_listener(ctx), config.submission.workers)
    return submission_listener(ctx)
