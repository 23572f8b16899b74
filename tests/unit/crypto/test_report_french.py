"""The signature report a doctor reads is French only: details the verifiers write in
English (cms, chain, smime, pgp, exceptions) are said in French from the structured fields."""

import re

from hypothesis import given
from hypothesis import strategies as st

from crypto import report as rep

ENGLISH = re.compile(r"\b(the|is|not|does|signature algorithm|certificate|content|match|"
                     r"expired on|valid only|unknown|signed|trusted|issuer)\b")

DETAILS = [  # what the verifiers write today, in English
    (rep.TAMPERED, "bad-chain", "the content does not match the signed digest"),
    (rep.INVALID, "", "signature algorithm not supported (x)"),
    (rep.UNTRUSTED, "unknown-issuer", "no trusted issuer for 'CN=X'"),
    (rep.UNTRUSTED, "valid", "the certificate is for a@b.example, not for the sender c@d.example"),
    (rep.UNTRUSTED, "", "the signing time 2030-01-01 00:00 is in the future"),
    (rep.EXPIRED, "expired", "'CN=X' expired on 2020-01-01"),
    (rep.EXPIRED, "not-yet-valid", "'CN=X' is valid only from 2030-01-01"),
    (rep.EXPIRED, "", "the message was signed outside the certificate's validity period"),
    (rep.REVOKED, "revoked", "'CN=X' is revoked"),
    (rep.UNTRUSTED, "bad-usage", "the certificate is not for signature: its key usage does not allow signing"),
]


def _report(status, chain_status, detail, method="smime"):
    signer = rep.SignerReport(method, status, detail, subject="CN=Jean Martin", email="a@b.example",
                              chain_status=chain_status)
    return rep.SignatureReport(signers=[signer]).settle()


def test_known_english_details_become_french():
    for status, chain_status, detail in DETAILS:
        text = rep.render_fr(_report(status, chain_status, detail))
        # The subject and e-mail address are data, not text: leave them out of the check.
        prose = text.replace("CN=Jean Martin", "").replace("a@b.example", "")
        assert not ENGLISH.search(prose), (detail, text)


def test_an_undecryptable_message_is_said_in_french():
    report = rep.SignatureReport(encrypted=True, decrypted=False, summary="no key to decrypt this message")
    assert "no key" not in rep.render_fr(report) and "déchiffrer" in rep.render_fr(report)


@given(st.sampled_from([rep.TAMPERED, rep.INVALID, rep.UNTRUSTED, rep.EXPIRED, rep.REVOKED]),
       st.sampled_from(["", "valid", "expired", "revoked", "unknown-issuer", "bad-usage", "bad-chain"]),
       st.text(alphabet="abcdefghij the not", max_size=40), st.sampled_from(["smime", "pgp"]))
def test_any_english_detail_is_replaced(status, chain_status, detail, method):
    text = rep.render_fr(_report(status, chain_status, "the " + detail, method))
    assert "the " + detail not in text
