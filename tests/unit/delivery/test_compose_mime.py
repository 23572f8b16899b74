"""mssmail.delivery.compose: the MIME of a message written in the webmail, read back by
the standard `email` package and by our own MIME tree; what is typed in À/Cc/Cci;
the thread headers and quoting of replies (RFC 5322 3.6.4, RFC 3676 4.5)."""

from __future__ import annotations

import email
import email.policy

from hypothesis import example, given, settings
from hypothesis import strategies as st

from mssmail.delivery import compose
from mssmail.mime.tree import parse
from mssmail.store.mimeview import list_parts


def read(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[return-value]


def test_build_a_message_with_attachments() -> None:
    draft = compose.Draft(sender="claire.durand@a.example", sender_name="Dr Claire Durand (Cardiologie)",
                          to=["Jean Martin <jean.martin@a.example>"], cc=["lab@b.example"], bcc=["secret@b.example"],
                          subject="Résultats « urgents »", body="Bonjour,\nvoir pièce jointe.\n",
                          attachments=[compose.Attachment("Compte rendu é.pdf", "application/pdf", b"%PDF x"),
                                       compose.Attachment("x", "bad\ntype", b"y")],
                          in_reply_to="<a@b>", references="<z@b> <a@b>")
    raw = compose.build(draft, hostname="mx.a.example", message_id="<id@mx.a.example>")
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    message = read(raw)
    assert message["From"].addresses[0].display_name == "Dr Claire Durand (Cardiologie)"
    assert message["Subject"] == "Résultats « urgents »" and "Bcc" not in message
    assert message["In-Reply-To"] == "<a@b>" and message["References"] == "<z@b> <a@b>"
    assert message["Message-ID"] == "<id@mx.a.example>"
    body = message.get_body(("plain",))
    assert body["Content-Transfer-Encoding"] == "quoted-printable"
    attachments = list(message.iter_attachments())
    assert [a.get_filename() for a in attachments] == ["Compte rendu é.pdf", "x"]
    assert attachments[1].get_content_type() == "application/octet-stream"
    # Our own MIME tree numbers them as message_part will.
    parts = [p for p in list_parts(parse(raw)) if p.is_attachment]
    assert [(p.part_id, p.filename) for p in parts] == [("2", "Compte rendu é.pdf"), ("3", "x")]
    assert read(compose.build(draft, hostname="h", with_bcc=True))["Bcc"] == "secret@b.example"
    assert draft.recipients() == ["jean.martin@a.example", "lab@b.example", "secret@b.example"]


def test_address_fields() -> None:
    good, bad = compose.parse_address_field(
        '"Durand, Claire" <claire@a.example>; jean@a.example,\nLab <lab@b.example>, pas une adresse, x@y, a@b.example>')
    assert good == ['"Durand, Claire" <claire@a.example>', "jean@a.example", "Lab <lab@b.example>"]
    assert bad == ["pas une adresse", "x@y", "a@b.example>"]
    assert compose.parse_address_field("  ,, ; ") == ([], [])


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_address_field_never_fails_and_gives_only_addresses(text: str) -> None:
    good, bad = compose.parse_address_field(text)
    for mailbox in good:
        address = email.utils.getaddresses([mailbox])[0][1]
        assert compose.valid_address(address)
    assert len(good) + len(bad) <= text.count(",") + text.count(";") + text.count("\n") + 1


def lines(text: str) -> list[str]:
    """The lines of a text, whatever its line ends, without the trailing empty ones."""
    found = text.replace("\r\n", "\n").splitlines()
    while found and not found[-1]:
        found.pop()
    return found


@settings(max_examples=100, deadline=None)
# Spaces at a fold between two encoded-words were dropped by the reader (RFC 2047 6.2).
@example(subject="=" * 11 + "\x80" * 4 + "\u200b" * 3 + "\U00010000" * 3 + "  \x80", body="", name="", data=b"")
@example(subject="Résultat " * 12 + " Hémoglobine  élevée", body="", name="", data=b"")
@given(subject=st.text(max_size=200).filter(lambda s: "\r" not in s and "\n" not in s),
       body=st.text(max_size=2000), name=st.text(max_size=40).filter(lambda s: s.isprintable()),
       data=st.binary(max_size=3000))
def test_what_is_built_reads_back(subject: str, body: str, name: str, data: bytes) -> None:
    draft = compose.Draft(sender="a@a.example", to=["b@b.example"], subject=subject, body=body,
                          attachments=[compose.Attachment(name or "f", "application/pdf", data)])
    message = read(compose.build(draft, hostname="h"))
    assert str(message["Subject"]).split() == compose.one_line(subject).split()
    text = message.get_body(("plain",)).get_content()
    assert lines(text) == lines(body)
    attachment = next(message.iter_attachments())
    assert attachment.get_content() == data


def original(**headers: str) -> compose.Original:
    return compose.Original([(k.replace("_", "-"), v) for k, v in headers.items()], "Ligne 1\n> déjà cité\n\nFin")


def test_thread_headers() -> None:
    assert compose.thread_headers(original(message_id="<p@x>", references="<a@x> <b@x>")) == \
        ("<p@x>", "<a@x> <b@x> <p@x>")
    assert compose.thread_headers(original(message_id="<p@x>", in_reply_to="<a@x>")) == ("<p@x>", "<a@x> <p@x>")
    assert compose.thread_headers(original(message_id="<p@x>", in_reply_to="<a@x> <b@x>")) == ("<p@x>", "<p@x>")
    long = " ".join(f"<{n}@x>" for n in range(50))
    _, refs = compose.thread_headers(original(message_id="<p@x>", references=long))
    ids = refs.split()
    assert len(ids) == compose.MAX_REFERENCES and ids[0] == "<0@x>" and ids[-1] == "<p@x>"


def test_reply_and_forward_drafts() -> None:
    mail = original(from_="Dr Labo <lab@b.example>", to="me@a.example, Autre <o@a.example>", cc="c@b.example",
                    subject="Re: Résultats", message_id="<p@x>")
    mail = compose.Original([(k.replace("from-", "from"), v) for k, v in mail.headers], mail.text)
    reply = compose.reply_to(mail, ["me@a.example"], everyone=False, when="lundi")
    assert reply.to == ["Dr Labo <lab@b.example>"] and reply.cc == [] and reply.subject == "Re: Résultats"
    assert reply.body == "\n\nLe lundi, Dr Labo <lab@b.example> a écrit :\n> Ligne 1\n>> déjà cité\n>\n> Fin\n"
    everyone = compose.reply_to(mail, ["ME@a.example"], everyone=True, when="lundi")
    assert everyone.to == ["Dr Labo <lab@b.example>"] and everyone.cc == ["Autre <o@a.example>", "c@b.example"]
    forward = compose.forward_of(mail, when="lundi")
    assert forward.subject == "Tr: Re: Résultats" and forward.to == []
    assert "De : Dr Labo <lab@b.example>\nDate : lundi\nObjet : Re: Résultats" in forward.body


def test_block_reply_only_to_patients() -> None:
    patient = compose.Draft(sender="a@a.example", to=["Mme X <1234567890123@patient.mssante.fr>"], subject="s",
                            body="b", block_reply=True)
    raw = compose.build(patient, hostname="h")
    assert read(raw)["X-MSS-MES"] == "FIN"
    again = compose.draft_of(compose.Original(list(read(raw).items()), "b"))
    assert again.block_reply
    doctor = compose.Draft(sender="a@a.example", to=["b@b.example"], subject="s", body="b", block_reply=True)
    assert "X-MSS-MES" not in read(compose.build(doctor, hostname="h"))
    assert not compose.draft_of(compose.Original([("Subject", "s")], "")).block_reply
