"""SMTP replies as named constants (RFC 5321 codes, RFC 3463 enhanced status codes)."""

from __future__ import annotations

from mssmail.store.errors import Refusal

Reply = tuple[int, str]


def render(reply: Reply) -> str:
    return f"{reply[0]} {reply[1]}"


OK = (250, "2.0.0 OK")
SENDER_OK = (250, "2.1.0 Sender OK")
RECIPIENT_OK = (250, "2.1.5 Recipient OK")
UNKNOWN_RECIPIENT = (550, "5.1.1 No such mailbox here")
MAILBOX_DISABLED = (550, "5.2.1 Mailbox disabled")
MAILBOX_FULL = (552, "5.2.2 Mailbox full")
NO_SUCH_FOLDER = (550, "5.2.0 No such folder in the mailbox")
SENDER_NOT_TRUSTED = (550, "5.7.1 Sender domain is not in the space of trust")
RECIPIENT_NOT_TRUSTED = (550, "5.7.1 Recipient domain is not in the space of trust")
RELAY_DENIED = (550, "5.7.1 Relaying denied")
CLIENT_CERT_REQUIRED = (550, "5.7.1 A client certificate from the space of trust is required")
STARTTLS_REQUIRED = (530, "5.7.0 Must issue a STARTTLS command first")
AUTH_REQUIRED = (530, "5.7.0 Authentication required")
AUTH_OK = (235, "2.7.0 Authentication successful")
AUTH_FAILED = (535, "5.7.8 Authentication credentials invalid")
# RFC 4954 6: 454 for a temporary failure (source blocked after repeated failures,
# or the password checker saturated); the account itself is never locked.
AUTH_LOCKED = (454, "4.7.0 Too many failed attempts from your address, try later")
AUTH_BUSY = (454, "4.7.0 Temporary authentication failure, try later")
SENDER_NOT_OWNED = (553, "5.7.1 Sender address not owned by the authenticated user")
FROM_HEADER_NOT_OWNED = (550, "5.7.1 From: header not owned by the authenticated user")
SENDER_HEADER_NOT_OWNED = (550, "5.7.1 Sender: or Reply-To: header not owned by the authenticated user")
HEADER_REPEATED = (550, "5.6.0 More than one From:, Sender: or Reply-To: header (RFC 5322 3.6)")
HEADER_AMBIGUOUS = (550, "5.6.0 Malformed header block: readers could see another sender")
LOCAL_SENDER_ON_MX = (550, "5.7.1 Mail from this domain must be submitted with authentication (port 587)")
LOCAL_FROM_ON_MX = (550, "5.7.1 From: names a local domain: such mail must be submitted with authentication")
FROM_NOT_TRUSTED = (550, "5.7.1 From: domain is not in the space of trust")
SENDER_NOT_CERTIFIED = (550, "5.7.1 Sender domain is not covered by your client certificate")
FROM_NOT_CERTIFIED = (550, "5.7.1 From: domain is not covered by your client certificate")
TOO_MANY_RECIPIENTS = (452, "4.5.3 Too many recipients")
MESSAGE_TOO_BIG = (552, "5.3.4 Message too big for system")
TOO_MANY_CONNECTIONS = (421, "4.7.0 Too many connections from your address, try later")
SHUTTING_DOWN = (421, "4.3.2 Service shutting down, try later")
TOO_MANY_ERRORS = (421, "4.7.0 Too many errors in this session, closing")
SESSION_TOO_LONG = (421, "4.4.2 Session time limit reached, closing")
TEMPORARY_FAILURE = (451, "4.3.0 Temporary local problem, try later")
NO_VALID_RECIPIENTS = (554, "5.5.1 No valid recipients")
RELAY_UNAVAILABLE = (451, "4.4.0 Outbound relay not available, try later")

# aiosmtpd's own replies that carry no enhanced status code (RFC 2034 asks every reply
# to carry one once ENHANCEDSTATUSCODES is advertised).
AIOSMTPD_REWRITES: dict[str, str] = {
    "552 Error: Too much mail data": render(MESSAGE_TOO_BIG),
    "552 Error: message size exceeds fixed maximum message size": render(MESSAGE_TOO_BIG),
    "530 Must issue a STARTTLS command first": render(STARTTLS_REQUIRED),
    "530 5.7.0 Authentication required": render(AUTH_REQUIRED),
    "538 5.7.11 Encryption required for requested authentication mechanism": render(STARTTLS_REQUIRED),
}
# Enhanced code given by reply class to other aiosmtpd replies.
DEFAULT_ENHANCED = {"2": "2.0.0", "3": "", "4": "4.0.0", "5": "5.5.2"}


def refusal(why: Refusal | None) -> Reply:
    """The SMTP reply for a recipient the store did not deliver to (RFC 3463 codes)."""
    return _REFUSALS.get(why, (451, "4.3.0 Delivery failed, try again later")) if why else OK


_REFUSALS: dict[Refusal | None, Reply] = {
    Refusal.NO_SUCH_MAILBOX: UNKNOWN_RECIPIENT,
    Refusal.MAILBOX_DISABLED: MAILBOX_DISABLED,
    Refusal.NO_SUCH_FOLDER: NO_SUCH_FOLDER,
    Refusal.MAILBOX_FULL: MAILBOX_FULL,
}
