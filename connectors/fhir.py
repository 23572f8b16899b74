"""The `fhir` target: an HTTPS POST of a FHIR R4 transaction Bundle to the server's base
URL (FHIR R4 RESTful API 3.1.0.11 "batch/transaction": `POST [base]` with a Bundle of
type `transaction`), with a bearer token or a client certificate (mTLS).

Answers: 2xx = done; 4xx = permanent (the server refused this Bundle: a dead letter,
its OperationOutcome text kept; 408 and 429 are "try later" and are retried); 5xx, a
network error or a timeout = retry. Idempotence comes from the Bundle itself: every
entry is a conditional create (`ifNoneExist`, `connectors.formats.fhir`), so a retry
after a lost answer creates nothing twice. The Bundle is rendered once, when the
message is routed, and kept in the blob store: every attempt posts the same bytes.

Target: `https://host[:port]/base`. Rule options: `token_file` (a file holding the
bearer token: the token is never stored in the database nor logged), `cert_file` and
`key_file` (the client certificate, PEM), `ca_file` (the CA that signs the server, else
the system's). Plain `http://` is refused unless the host is a loopback address.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from connectors.folder import PermanentError, TemporaryError
from connectors.tls import client_context

MAX_ANSWER = 1024 * 1024  # the server's answer we read (an OperationOutcome, a response Bundle)
OPTION_KEYS = ("token_file", "cert_file", "key_file", "ca_file")
RETRIED_4XX = (408, 429)


@dataclass(frozen=True)
class Answer:
    status: int
    reason: str
    body: bytes

    def summary(self) -> str:
        """`201 Created`, then the OperationOutcome's text or each entry's status."""
        text = f"{self.status} {self.reason}".strip()
        detail = outcome_text(self.body)
        return f"{text}: {detail}" if detail else text


def outcome_text(body: bytes) -> str:
    """What a FHIR answer says, short: an OperationOutcome's issues, or a transaction
    response's entry statuses (`201 Created, 200 OK`: 200 is a conditional create that
    found the resource already there)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return ""
    if not isinstance(data, dict):
        return ""
    if data.get("resourceType") == "OperationOutcome":
        issues = [i for i in data.get("issue", []) if isinstance(i, dict)]
        parts = []
        for issue in issues[:5]:
            found = issue.get("details")
            details: dict[str, Any] = found if isinstance(found, dict) else {}
            codes = [c.get("code", "") for c in details.get("coding", []) if isinstance(c, dict)]
            parts.append(" ".join(x for x in (issue.get("severity", ""), issue.get("code", ""), *codes,
                                              details.get("text", ""), issue.get("diagnostics", "")) if x))
        return "; ".join(parts)[:1000]
    if data.get("resourceType") == "Bundle":
        statuses = [str((e.get("response") or {}).get("status", "")) for e in data.get("entry", [])
                    if isinstance(e, dict)]
        return ", ".join(s for s in statuses if s)[:1000]
    return ""


def validate_target(target: str) -> None:
    """ValueError with one sentence for a URL this target cannot post to."""
    parts = urlsplit(target)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"a fhir target is an https:// base URL, not {target!r}.")
    if parts.scheme == "http" and not _loopback(parts.hostname):
        raise ValueError("a fhir target uses https (plain http only to a loopback address).")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _token(options: Mapping[str, str]) -> str:
    path = options.get("token_file")
    if not path:
        return ""
    try:
        token = Path(path).read_text("utf-8").strip()
    except OSError as exc:
        raise TemporaryError(f"cannot read the fhir token file {path}: {exc.strerror or exc}") from exc
    if not token or any(c in token for c in "\r\n"):
        raise PermanentError(f"the fhir token file {path} holds no single-line token")
    return token


def post(target: str, bundle: bytes, options: Mapping[str, str], timeout: float) -> Answer:
    """POST the Bundle; the server's answer (any status). TemporaryError for a network
    failure or a timeout."""
    parts = urlsplit(target)
    host, port = parts.hostname or "", parts.port
    path = parts.path or "/"
    headers = {"Content-Type": "application/fhir+json; charset=utf-8", "Accept": "application/fhir+json",
               "User-Agent": "mss-connectors"}
    token = _token(options)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    connection: http.client.HTTPConnection
    try:
        if parts.scheme == "https":
            connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=client_context(options))
        else:
            connection = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            connection.request("POST", path, body=bundle, headers=headers)
            response = connection.getresponse()
            body = response.read(MAX_ANSWER + 1)[:MAX_ANSWER]
            return Answer(response.status, response.reason, body)
        finally:
            connection.close()
    except ssl.SSLCertVerificationError as exc:
        raise TemporaryError(f"{host}: TLS certificate not accepted ({exc.verify_message})") from exc
    except (OSError, http.client.HTTPException) as exc:
        raise TemporaryError(f"{host}:{port or 443}: {getattr(exc, 'strerror', None) or exc}") from exc


def deliver(target: str, bundle: bytes, options: Mapping[str, str], timeout: float) -> Answer:
    """Post and classify: the answer when 2xx, else PermanentError (4xx) or
    TemporaryError (5xx, 408, 429, network)."""
    from connectors import mdn

    answer = post(target, bundle, options, timeout)
    if 200 <= answer.status < 300:
        return answer
    if 400 <= answer.status < 500 and answer.status not in RETRIED_4XX:
        summary = answer.summary()
        raise PermanentError(f"fhir server refused the Bundle, {summary}", mdn.code_in(outcome_text(answer.body)))
    raise TemporaryError(f"fhir server answered {answer.summary()}")


def bundle_bytes(bundle: dict[str, Any]) -> bytes:
    return json.dumps(bundle, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def render(result: Any, part: Any, data: bytes) -> bytes:
    """The transaction Bundle of one routed part (HPRIM Net record, HPRIM Santé patient,
    CDA document alone or inside an XDM). ValueError for a part FHIR cannot carry."""
    from connectors.formats import fhir as fhir_format
    from connectors.formats.cda_dlu import CdaHeader, Dlu
    from connectors.formats.hprim_net import HprimNetFile
    from connectors.formats.hprim_sante import HprimSanteFile
    from connectors.formats.xdm import XdmPackage

    if isinstance(result, HprimNetFile):
        return bundle_bytes(fhir_format.bundle_from_hprim_net(result.records[part.index]))
    if isinstance(result, HprimSanteFile):
        return bundle_bytes(fhir_format.bundle_from_hprim_sante(result, result.patients[part.index]))
    if isinstance(result, Dlu):
        return bundle_bytes(fhir_format.bundle_from_cda(data, result.header))
    if isinstance(result, XdmPackage):
        documents = [d for s in result.submission_sets for d in s.documents]
        document = documents[part.index]
        header = document.content.header if isinstance(document.content, Dlu) else document.content
        if isinstance(header, CdaHeader):
            return bundle_bytes(fhir_format.bundle_from_cda(document.data, header, format_code=document.format_code))
    raise ValueError(f"no FHIR rendering of {part.kind}")
