"""The webmail's list actions and search on a real `mss serve`, checked by a real IMAP
client (imaplib): what the webmail marks, moves and deletes is what IMAP sees, and
`/recherche` finds, folder by folder, exactly the UIDs that IMAP `UID SEARCH` with the
same keys finds (FROM, TO, SUBJECT, TEXT, SENTSINCE, SENTBEFORE)."""

from __future__ import annotations

import imaplib
import re
import ssl
from collections.abc import Iterator
from urllib.parse import unquote

import httpx
import pytest

from tests.integration.test_webmail import login, send, web
from tests.support.instance import MssInstance

DOMAIN = "a.example"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MssInstance]:
    inst = MssInstance(tmp_path_factory.mktemp("webpages") / "a", DOMAIN)
    # With the full-text indexer: the webmail and IMAP both narrow through it.
    inst.start("submission", "imap", "web", "index")
    yield inst
    assert inst.stop() == 0


def imap_for(server: MssInstance, address: str) -> imaplib.IMAP4:
    imap = imaplib.IMAP4("127.0.0.1", server.ports["imap"], timeout=30)
    imap.starttls(ssl_context=ssl.create_default_context(cafile=str(server.ca_file)))
    imap.login(address, server.passwords[address])
    return imap


def imap_search(imap: imaplib.IMAP4, folder: str, *keys: str) -> set[int]:
    status, _ = imap.select(f'"{folder}"', readonly=True)
    assert status == "OK"
    imap.literal = None
    status, data = imap.uid("SEARCH", "CHARSET", "UTF-8", *keys)
    assert status == "OK", data
    return {int(u) for u in data[0].split()}


def web_hits(client: httpx.Client, **params: str) -> dict[str, set[int]]:
    page = client.get("/recherche", params=params)
    assert page.status_code == 200, page.text
    found: dict[str, set[int]] = {}
    for folder, uid in re.findall(r'class="lien-message" href="/b/[^/]+/(.+?)/\d+/(\d+)"', page.text):
        found.setdefault(unquote(folder), set()).add(int(uid))
    return found


@pytest.fixture(scope="module")
def jean(server: MssInstance) -> Iterator[tuple[httpx.Client, imaplib.IMAP4, str]]:
    address = server.address("jean.martin")
    for subject, body in (("Résultats Dupont", "Glycémie 1,45 g/L"), ("Courrier urgent", "Patient vu ce jour"),
                          ("Résultats Durand", "Créatinine normale"), ("Compte rendu 100%", "Glycémie à jeun")):
        send(server, address, subject, body)
    imap = imap_for(server, address)
    imap.create("Archives")
    for day, subject, body in ((3, "Ancien bilan", "Glycémie 0,95"), (20, "Vieux courrier", "Rien de neuf")):
        raw = (f"From: Labo <labo@b.example>\r\nTo: {address}\r\nSubject: {subject}\r\n"
               f"Date: Tue, {day} Oct 2026 09:00:00 +0000\r\nMessage-ID: <{day}@b.example>\r\n\r\n{body}\r\n")
        assert imap.append("Archives", "", None, raw.encode())[0] == "OK"
    with web(server) as client:
        login(client, server, address)
        yield client, imap, address
    imap.logout()


@pytest.mark.parametrize(("params", "keys"), [
    ({"de": "claire"}, ("FROM", "claire")),
    ({"de": "labo"}, ("FROM", "labo")),
    ({"a": "jean.martin"}, ("TO", "jean.martin")),
    ({"objet": "résultats"}, ("SUBJECT", "résultats")),
    ({"objet": "100%"}, ("SUBJECT", "100%")),
    ({"texte": "glycémie"}, ("TEXT", "glycémie")),
    ({"du": "2026-10-04", "au": "2026-10-20"}, ("SENTSINCE", "4-Oct-2026", "SENTBEFORE", "21-Oct-2026")),
    ({"de": "labo", "texte": "glycémie"}, ("FROM", "labo", "TEXT", "glycémie")),
])
def test_search_finds_what_imap_search_finds(jean: tuple[httpx.Client, imaplib.IMAP4, str],
                                             params: dict[str, str], keys: tuple[str, ...]) -> None:
    client, imap, _address = jean
    found = web_hits(client, **params)
    for folder in ("INBOX", "Archives", "Sent", "Trash"):
        if any(not k.isascii() for k in keys):
            expected = imap_search_utf8(imap, folder, keys)
        else:  # "100%": % may not be in an atom (RFC 3501 9, list-wildcards)
            expected = imap_search(imap, folder, *(f'"{k}"' if "%" in k else k for k in keys))
        assert found.get(folder, set()) == expected, (folder, params)
    assert any(found.values()), params  # each case matches something somewhere


def imap_search_utf8(imap: imaplib.IMAP4, folder: str, keys: tuple[str, ...]) -> set[int]:
    """UID SEARCH with non-ASCII strings sent as literals (RFC 3501 6.4.4, CHARSET UTF-8)."""
    status, _ = imap.select(f'"{folder}"', readonly=True)
    assert status == "OK"
    plain = [k for k in keys if k.isascii()]
    literals = [k for k in keys if not k.isascii()]
    assert len(literals) == 1 and keys[-1] == literals[0], "one non-ASCII value, last"
    imap.literal = literals[0].encode()
    status, data = imap.uid("SEARCH", "CHARSET", "UTF-8", *plain)
    assert status == "OK", data
    return {int(u) for u in data[0].split()}


def test_list_actions_are_what_imap_sees(jean: tuple[httpx.Client, imaplib.IMAP4, str]) -> None:
    client, imap, address = jean
    inbox = client.get("/", follow_redirects=True)
    fields = dict(re.findall(r'<input type="hidden" name="([a-z]+)" value="([^"]*)"', inbox.text))
    uids = [int(u) for u in re.findall(r'name="uid" value="(\d+)"', inbox.text)]
    assert len(uids) >= 4
    first, second = uids[:2]

    def act(action: str, *chosen: int, **more: str) -> str:
        response = client.post("/actions", data={**fields, "action": action, "uid": [str(u) for u in chosen],
                                                  **more}, follow_redirects=False)
        assert response.status_code == 303, response.text
        return str(response.headers["location"])

    assert act("lu", first, second).endswith("fait=lu&n=2")
    imap.select("INBOX")
    flags = imap.uid("FETCH", f"{first},{second}", "(FLAGS)")[1]
    assert all(b"\\Seen" in f for f in flags), flags
    assert act("non-lu", second).endswith("fait=non-lu&n=1")
    assert b"\\Seen" not in imap.uid("FETCH", str(second), "(FLAGS)")[1][0]
    assert act("deplacer", second, vers="Archives").endswith("fait=deplace&n=1")
    assert act("supprimer", first).endswith("fait=corbeille&n=1")
    imap.noop()
    assert imap.uid("SEARCH", "ALL")[1][0].split().count(str(first).encode()) == 0
    trashed = imap_search(imap, "Trash", "ALL")
    assert len(trashed) == 1
    # From the Corbeille: gone for good, over IMAP too.
    trash_page = client.get(f"/b/{address}/Trash")
    trash_fields = dict(re.findall(r'<input type="hidden" name="([a-z]+)" value="([^"]*)"', trash_page.text))
    response = client.post("/actions", data={**trash_fields, "action": "supprimer", "uid": [str(u) for u in trashed]},
                           follow_redirects=False)
    assert response.headers["location"].endswith("fait=supprime&n=1")
    assert imap_search(imap, "Trash", "ALL") == set()
