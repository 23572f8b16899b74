"""Component factories for `mss serve`: the MX and the submission listeners."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mssmail.smtp.handlers import MxHandler, SubmissionHandler
from mssmail.smtp.server import SmtpListener
from mssmail.tls import server_context

if TYPE_CHECKING:
    from mssmail.service import ServerContext


def mx_component(ctx: ServerContext) -> SmtpListener | None:
    config = ctx.config
    if not config.smtp.port:
        return None
    tls = server_context(config, request_client_cert=config.trust.require_client_cert)
    return SmtpListener("smtp", ctx, MxHandler(ctx), port=config.smtp.port,
                        bind=config.bind_of(config.smtp), tls_context=tls, auth=False)


def submission_component(ctx: ServerContext) -> SmtpListener | None:
    config = ctx.config
    if not config.submission.port:
        return None
    return SmtpListener("submission", ctx, SubmissionHandler(ctx), port=config.submission.port,
                        bind=config.bind_of(config.submission), tls_context=server_context(config),
                        auth=True)
