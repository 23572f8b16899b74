"""The folder list's actions through the TestClient on a real store: ticked messages
marked read/unread, moved, put in the Corbeille then removed from it, each audited by
the store as IMAP's STORE/MOVE/EXPUNGE are; the CSRF token, UIDVALIDITY and rights
checked; nothing done on a refused form."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from mssmail.store.actors import Actor
from mssmail.store.models import AuditEvent
from mssmail.store.service import Store
from tests.unit.webmail.conftest import DOC, OTHER
from tests.unit.webmail.test_app import login, plain

INBOX = f"/b/{DOC}/INBOX"


def listing(client: TestClient, path: str = INBOX) -> tuple[str, dict[str, str]]:
    page = client.get(path)
    assert page.status_code == 200, page.text
    fields = dict(re.findall(r'<input type="hidden" name="([a-z]+)" value="([^"]*)"', page.text))
    return page.text, fields


def act(client: TestClient, action: str, uids: list[int], path: str = INBOX, **more: str):
    _text, fields = listing(client, path)
    data = {**fields, "action": action, "uid": [str(u) for u in uids], **more}
    return client.post("/actions", data=data, follow_redirects=False)


def flags(store: Store, folder: str = "INBOX", address: str = DOC) -> dict[int, set[str]]:
    ref = store.open_folder(Actor.user(address), address, folder)
    return {m.uid: set(m.flags) for m in store.message_page(ref, limit=500).items}


def events(store: Store, action: str) -> list[AuditEvent]:
    with store.db.read() as s:
        return list(s.execute(select(AuditEvent).where(AuditEvent.action == action)).scalars())


@pytest.fixture
def three(client: TestClient, store: Store) -> TestClient:
    for n in (1, 2, 3):
        store.deliver(plain(n), [DOC])
    login(client)
    return client


def test_list_has_checkboxes_and_the_four_actions(three: TestClient) -> None:
    text, fields = listing(three)
    assert fields["adresse"] == DOC and fields["dossier"] == "INBOX" and fields["uidvalidity"].isdigit()
    assert text.count('type="checkbox" name="uid"') == 3
    for label in ("Marquer comme lu", "Marquer comme non lu", "Déplacer vers…", "Supprimer"):
        assert label in text
    assert '<option value="Trash">Corbeille</option>' in text
    assert '<option value="INBOX">' not in text  # not into itself


def test_mark_read_then_unread(three: TestClient, store: Store) -> None:
    response = act(three, "lu", [1, 3])
    assert response.status_code == 303
    assert response.headers["location"] == f"{INBOX}?fait=lu&n=2"
    assert {u for u, f in flags(store).items() if "\\Seen" in f} == {1, 3}
    page = three.get(response.headers["location"])
    assert 'role="status">2 messages marqués comme lus.' in page.text
    assert "1<span class=\"visuellement-cache\"> non lu</span>" in page.text
    assert events(store, "flags")[-1].actor == DOC
    response = act(three, "non-lu", [3])
    assert response.headers["location"] == f"{INBOX}?fait=non-lu&n=1"
    assert {u for u, f in flags(store).items() if "\\Seen" in f} == {1}
    assert "1 message marqué comme non lu." in three.get(response.headers["location"]).text


def test_move_to_another_folder(three: TestClient, store: Store) -> None:
    store.folder_create(Actor.user(DOC), DOC, "Patients/Durand")
    response = act(three, "deplacer", [2], vers="Patients/Durand")
    assert response.headers["location"] == f"{INBOX}?fait=deplace&n=1"
    assert set(flags(store)) == {1, 3}
    assert len(flags(store, "Patients/Durand")) == 1
    move = events(store, "move")[-1]
    assert move.actor == DOC and move.details["to_folder"] == "Patients/Durand"


def test_move_without_a_target_or_to_a_missing_folder_does_nothing(three: TestClient, store: Store) -> None:
    assert act(three, "deplacer", [2]).headers["location"] == f"{INBOX}?erreur=destination"
    assert act(three, "deplacer", [2], vers="Nulle part").headers["location"] == f"{INBOX}?erreur=destination"
    assert set(flags(store)) == {1, 2, 3}
    assert 'role="alert">Choisissez le dossier de destination.' in three.get(f"{INBOX}?erreur=destination").text


def test_delete_moves_to_trash_then_removes_for_good(three: TestClient, store: Store) -> None:
    response = act(three, "supprimer", [1, 2])
    assert response.headers["location"] == f"{INBOX}?fait=corbeille&n=2"
    assert set(flags(store)) == {3}
    in_trash = flags(store, "Trash")
    assert len(in_trash) == 2
    trash = f"/b/{DOC}/Trash"
    text, _ = listing(three, trash)
    assert "Supprimer définitivement" in text
    # A message flagged \Deleted by an IMAP client but not ticked stays.
    ref = store.open_folder(Actor.user(DOC), DOC, "Trash")
    first, second = sorted(in_trash)
    store.set_flags(ref, [second], "+", ["\\Deleted"])
    response = act(three, "supprimer", [first], path=trash)
    assert response.headers["location"] == f"{trash}?fait=supprime&n=1"
    assert set(flags(store, "Trash")) == {second}
    assert events(store, "expunge")[-1].details["count"] == 1


def test_nothing_ticked_says_so(three: TestClient, store: Store) -> None:
    response = act(three, "lu", [])
    assert response.headers["location"] == f"{INBOX}?erreur=aucun"
    assert "Cochez au moins un message." in three.get(response.headers["location"]).text


def test_paging_cursor_is_kept(client: TestClient, store: Store) -> None:
    for n in range(55):
        store.deliver(plain(n), [DOC])
    login(client)
    response = act(client, "lu", [1], path=f"{INBOX}?avant=6")
    assert response.headers["location"] == f"{INBOX}?avant=6&fait=lu&n=1"


def test_refused_forms_change_nothing(three: TestClient, store: Store) -> None:
    _text, fields = listing(three)
    base = {**fields, "action": "supprimer", "uid": ["1"]}
    assert three.post("/actions", data={**base, "csrf": "x"}).status_code == 403
    assert three.post("/actions", data=base, headers={"Origin": "https://evil.example"}).status_code == 403
    stale = three.post("/actions", data={**base, "uidvalidity": str(int(fields["uidvalidity"]) + 1)})
    assert stale.status_code == 404 and "Message introuvable." in stale.text
    assert three.post("/actions", data={**base, "action": "tout-effacer"}).status_code == 400
    assert three.post("/actions", data={**base, "adresse": OTHER}).status_code == 404  # not delegated
    assert set(flags(store)) == {1, 2, 3}


def test_read_only_delegate_cannot_change_anything(client: TestClient, store: Store) -> None:
    store.deliver(plain(1), [OTHER])
    store.add_delegation(OTHER, DOC, "read")
    login(client)
    path = f"/b/{OTHER}/INBOX"
    response = act(client, "lu", [1], path=path)
    assert response.headers["location"] == f"{path}?erreur=lecture"
    assert "\\Seen" not in flags(store, address=OTHER)[1]
    assert "seulement le droit de lecture" in client.get(response.headers["location"]).text


def test_full_delegate_acts_in_the_delegated_box(client: TestClient, store: Store) -> None:
    store.deliver(plain(1), [OTHER])
    store.add_delegation(OTHER, DOC, "full")
    login(client)
    response = act(client, "supprimer", [1], path=f"/b/{OTHER}/INBOX")
    assert response.headers["location"].endswith("fait=corbeille&n=1")
    assert len(flags(store, "Trash", OTHER)) == 1
    assert events(store, "move")[-1].actor == DOC and events(store, "move")[-1].mailbox == OTHER


def test_notice_only_says_known_things(three: TestClient) -> None:
    page = three.get(f"{INBOX}?fait=<script>&erreur=pirate&n=99999999")
    assert "<script>" not in page.text
    assert '<p class="erreur"' not in page.text and '<p class="fait"' not in page.text


def test_help_page_lists_every_shortcut_the_script_handles(three: TestClient) -> None:
    from webmail.aide import SHORTCUTS

    page = three.get("/aide")
    assert page.status_code == 200
    script = three.get("/static/raccourcis.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    for key, text in SHORTCUTS:
        assert f"<kbd>{key}</kbd>" in page.text and text.split(" (")[0] in page.text
        assert re.search(rf'"{re.escape(key)}": function', script.text), key
    assert set(re.findall(r'^    "(.)": function', script.text, re.M)) == {k for k, _ in SHORTCUTS}
    assert '<script src="/static/raccourcis.js" defer></script>' in page.text
    # The list links j/k move between, on every folder page.
    assert three.get(INBOX).text.count('class="lien-message"') == 3


@pytest.mark.parametrize("name", ["Archives/2024", "Patients/corps", "Bilans/partie"])
def test_a_folder_named_like_the_end_of_a_message_path_is_a_folder_page(three: TestClient, store: Store,
                                                                         name: str) -> None:
    """A folder whose last name is a number or a page word is still listed (the path
    names a message only with UIDVALIDITY and UID before it), and its actions work."""
    store.folder_create(Actor.user(DOC), DOC, name)
    assert act(three, "deplacer", [2], vers=name).headers["location"] == f"{INBOX}?fait=deplace&n=1"
    text, _fields = listing(three, f"/b/{DOC}/{name}")
    assert len(flags(store, name)) == 1 and 'name="uid" value="1"' in text
    assert three.get(f"/b/{DOC}/{name}?avant=x").status_code == 404
