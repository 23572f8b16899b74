"""LDAP entry <-> models mapping (directory/entrymap.py) on both database engines."""

from __future__ import annotations

import pytest

from directory import entrymap as em


def attrs(**kw) -> em.Attrs:
    return em.normalize([(k, v if isinstance(v, list) else [v]) for k, v in kw.items()], strict=True)


BASE = {"objectClass": ["top", "inetOrgPerson", "mssMailbox"], "mail": "a.b@x.example", "cn": "A B", "sn": "B",
        "mailboxType": "PER", "rppsId": "10000000207"}


def test_strict_validation_codes():
    with pytest.raises(em.EntryError) as e:
        attrs(shoeSize="42")
    assert e.value.code == em.UNDEFINED_ATTRIBUTE_TYPE
    assert em.normalize([("shoeSize", [b"42"]), ("MAIL", [b"x@y.example"])], strict=False) == {"mail": [b"x@y.example"]}
    for change, code in [({"objectClass": ["mssMailbox", "device"]}, em.OBJECT_CLASS_VIOLATION),
                         ({"objectClass": ["inetOrgPerson"]}, em.OBJECT_CLASS_VIOLATION),
                         ({"sn": []}, em.OBJECT_CLASS_VIOLATION),
                         ({"rppsId": "10000000208"}, em.INVALID_SYNTAX),
                         ({"mail": "not a mail"}, em.INVALID_SYNTAX),
                         ({"unlisted": "yes"}, em.INVALID_SYNTAX),
                         ({"preferredRank": "0"}, em.INVALID_SYNTAX),
                         ({"cn": ["one", "two"]}, em.CONSTRAINT_VIOLATION),
                         ({"nationalId": "810000000208"}, em.CONSTRAINT_VIOLATION)]:
        with pytest.raises(em.EntryError) as e:
            em.to_record(attrs(**{**BASE, **change}), strict=True)
        assert e.value.code == code, change


def test_record_mapping_and_lenient_defaults():
    rec = em.to_record(attrs(**BASE, o="Clinique", l="Lyon", finessId="010000024", givenName="A"), strict=True)
    assert rec.person["national_id"] == "810000000207" and rec.person["family_name"] == "B"
    assert rec.structure["tech_id"] == "F010000024" and rec.structure["city_lc"] == "lyon"
    assert rec.display_name == "A B"
    # Lenient (sync): no objectClass, no mailboxType (PER when a person identifier is given, else ORG).
    rec = em.to_record(em.normalize([("mail", [b"s@x.example"]), ("o", [b"Labo"])], strict=False), strict=False)
    assert rec.bal_type == "ORG" and rec.person is None and rec.structure["name"] == "Labo"
    assert rec.digest() == em.to_record(em.normalize([("o", [b"Labo"]), ("mail", [b"s@x.example"])],
                                                     strict=False), strict=False).digest()


def test_modify_operations():
    a = attrs(**BASE)
    assert em.modify(a, [(2, "cn", [b"C"])])["cn"] == [b"C"]
    assert "sn" not in em.modify(a, [(1, "sn", [])])
    assert em.modify(a, [(0, "description", [b"d"])])["description"] == [b"d"]
    for op, code in [((0, "cn", [b"A B"]), 20), ((1, "givenName", []), 16), ((1, "cn", [b"zz"]), 16),
                     ((2, "shoeSize", [b"1"]), em.UNDEFINED_ATTRIBUTE_TYPE)]:
        with pytest.raises(em.EntryError) as e:
            em.modify(a, [op])
        assert e.value.code == code


def test_apply_view_roundtrip(store):
    rec = em.to_record(attrs(**BASE, o="Clinique", l="Lyon", userCertificate=b"\x30\x03\x02\x01\x01"), strict=True)
    with store.db.write() as s:
        status, m = em.apply(s, rec, source="ldap", mode="add")
        assert status == "added"
    with store.db.write() as s, pytest.raises(em.EntryError) as e:
        em.apply(s, rec, source="ldap", mode="add")
    assert e.value.code == em.ENTRY_ALREADY_EXISTS
    with store.db.write() as s:
        m = em.find_mailbox(s, "A.B@x.example")
        view = em.view(m)
        assert view["userCertificate;binary"] == [b"\x30\x03\x02\x01\x01"]
        back = em.to_record(view, strict=True)
        assert back.digest() == rec.digest()
        # Changing the type is refused; unchanged hash short-circuits.
        with pytest.raises(em.EntryError) as e:
            em.apply(s, em.to_record({**view, "mailboxType": [b"ORG"]}, strict=True), source="ldap", mode="replace")
        assert e.value.code == em.UNWILLING
    with store.db.write() as s:
        status, _ = em.apply(s, rec, source="sync:1", mode="upsert", import_hash=rec.digest())
        assert status == "updated"
        status, _ = em.apply(s, rec, source="sync:1", mode="upsert", import_hash=rec.digest())
        assert status == "unchanged"
        em.remove_mailbox(s, em.find_mailbox(s, "a.b@x.example"))
        assert em.find_mailbox(s, "a.b@x.example") is None
