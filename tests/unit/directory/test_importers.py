"""Importers of the national extraction files, on SQLite and PostgreSQL: kinds, encodings,
rejected lines with their numbers, truncated files, idempotent re-import, update and removal."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from directory import store as dstore
from directory.filters import parse
from directory.importers import FormatError, detect_kind, import_file
from directory.importers.formats import LineDecoder
from directory.importers.synthetic import (
    ACTIVITY_HEADER,
    MSSANTE_HEADER,
    activity_line,
    finess,
    mssante_line,
    rpps,
)
from directory.models import DirActivity, DirMailbox, DirPerson, DirStructure


def act(i: int, **kw) -> str:
    args = {"rpps_id": rpps(i), "family": f"NOM{i}", "given": "Jean", "tech_id": f"R{i % 3:05d}",
            "site_name": f"Cabinet {i % 3}", "postal_code": "75001", "city": "PARIS"}
    args.update(kw)
    return activity_line(**args)


def write(tmp_path, name: str, text: str, encoding: str = "utf-8") -> str:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return str(path)


def count(store, model) -> int:
    with store.db.read() as s:
        return s.scalar(select(func.count()).select_from(model))


def person(store, rpps_id: str):
    with store.db.read() as s:
        return s.scalar(select(DirPerson).where(DirPerson.ident == rpps_id))


def test_detect_kind_from_header():
    assert detect_kind(ACTIVITY_HEADER) == "activity"
    assert detect_kind("\ufeff" + MSSANTE_HEADER.upper()) == "mssante"
    with pytest.raises(FormatError, match=r"unrecognised header .*56-column.*31-column"):
        detect_kind("a|b|c|\n")
    with pytest.raises(FormatError, match="unrecognised header"):  # right names, one column short
        detect_kind("|".join(ACTIVITY_HEADER.split("|")[:55]) + "|\n")


def test_line_decoder_switches_to_windows_1252():
    dec = LineDecoder()
    assert dec.decode("Hélène".encode(), 1) == "Hélène" and dec.encoding == "utf-8"
    assert dec.decode("Lefèvre".encode("cp1252"), 2) == "Lefèvre"
    assert dec.encoding == "utf-8+windows-1252" and dec.switched_at == 2
    dec = LineDecoder()
    dec.decode(b"ascii", 1)
    assert dec.decode("Noël".encode("cp1252"), 2) == "Noël" and dec.encoding == "windows-1252"


def test_activity_import_with_rejected_lines(store, tmp_path):
    bad_rpps = rpps(5)[:-1] + str((int(rpps(5)[-1]) + 1) % 10)
    bad_finess = finess(3)[:-1] + str((int(finess(3)[-1]) + 1) % 10)
    lines = [
        ACTIVITY_HEADER,
        act(1, finess_site=finess(1)),                       # 2
        act(1, tech_id="R99999", site_name="Hôpital Nord"),  # 3: second activity of the same person
        act(2),                                              # 4
        act(5, rpps_id=bad_rpps),                            # 5: bad RPPS check digit
        act(3, finess_site=bad_finess),                      # 6: bad FINESS key
        "8|" + rpps(4) + "|too|short|\n",                    # 7: wrong column count
        "\n",                                                # 8: blank, skipped
        act(6, type_pp="0", rpps_id="123456789"),            # 9: ADELI
        act(7).rstrip("\n")[:-40],                           # 10: truncated last line
    ]
    report = import_file(store, write(tmp_path, "PS_LibreAcces_Personne_activite_1.txt", "".join(lines)))
    assert report.kind == "activity" and report.encoding == "utf-8"
    assert report.read == 8
    assert [(r.line, r.reason.split(":")[0].split(" (")[0]) for r in report.rejected] == [
        (5, f"RPPS {bad_rpps} has a wrong check digit"),
        (6, "FINESS site"),
        (7, "wrong column count"),
        (10, "truncated last line"),
    ]
    assert "wrong key" in report.rejected[1].reason and "4 instead of 56" in report.rejected[2].reason
    assert report.tables["persons"].added == 3 and report.tables["activities"].added == 4
    assert report.added == 3 + 4  # entries: 3 persons + 4 structures (R00001, R99999, R00002, R00000)
    assert count(store, DirPerson) == 3 and count(store, DirActivity) == 4
    p = person(store, rpps(1))
    assert (p.family_name, p.given_name, p.national_id, p.source) == ("NOM1", "Jean", "8" + rpps(1), "activity")
    assert person(store, "123456789").id_type == "ADELI"
    with store.db.read() as s:
        st = s.scalar(select(DirStructure).where(DirStructure.tech_id == "R00001"))
        assert (st.finess, st.city, st.name) == (finess(1), "PARIS", "Cabinet 1")


def test_windows_1252_file_with_accents(store, tmp_path):
    text = ACTIVITY_HEADER + act(1, family="LEFÈVRE", given="Hélène", city="SAINT-ÉTIENNE") + act(2, given="Noël")
    report = import_file(store, write(tmp_path, "a.txt", text, "cp1252"))
    assert report.encoding == "windows-1252" and report.rejected == []
    p = person(store, rpps(1))
    assert (p.family_name, p.given_name, p.family_lc) == ("LEFÈVRE", "Hélène", "lefèvre")
    assert person(store, rpps(2)).given_name == "Noël"


def test_unknown_header_and_wrong_kind(store, tmp_path):
    with pytest.raises(FormatError, match="unrecognised header"):
        import_file(store, write(tmp_path, "x.txt", "Nom|Prénom|\nA|B|\n"))
    with pytest.raises(FormatError, match="is a activity file, not a mssante file"):
        import_file(store, write(tmp_path, "a.txt", ACTIVITY_HEADER + act(1)), "mssante")


def test_reimport_is_idempotent_and_newer_file_updates_and_removes(store, tmp_path):
    local = dstore.add_person(store, ident=rpps(900), family_name="Local")  # never removed by imports
    v1 = ACTIVITY_HEADER + "".join(act(i) for i in range(1, 11))
    path = write(tmp_path, "v1.txt", v1)
    first = import_file(store, path)
    assert first.tables["persons"].added == 10 and first.removed == 0
    before = person(store, rpps(3)).modified_at

    again = import_file(store, path)
    assert (again.added, again.updated, again.removed, again.rejected_count) == (0, 0, 0, 0)
    assert again.tables["persons"].unchanged == 10 and again.tables["activities"].unchanged == 10
    assert person(store, rpps(3)).modified_at == before

    # Newer file: person 3 renamed, person 4 moves to another site, persons 9 and 10 gone.
    v2 = ACTIVITY_HEADER + "".join(
        act(i, family="NOUVEAU" if i == 3 else f"NOM{i}", tech_id="R77777" if i == 4 else f"R{i % 3:05d}")
        for i in range(1, 9))
    newer = import_file(store, write(tmp_path, "v2.txt", v2))
    assert newer.tables["persons"].updated == 1 and newer.tables["persons"].removed == 2
    assert newer.tables["structures"].added == 1
    assert newer.tables["activities"].added == 1 and newer.tables["activities"].removed == 3
    assert person(store, rpps(3)).family_name == "NOUVEAU"
    assert person(store, rpps(9)) is None and person(store, rpps(1)) is not None
    assert person(store, rpps(900)).id == local
    assert count(store, DirActivity) == 8


def test_mssante_import_links_mailboxes(store, tmp_path):
    import_file(store, write(tmp_path, "a.txt", ACTIVITY_HEADER + act(1, family="MARTIN", given="Jean") + act(2)))
    lines = [
        MSSANTE_HEADER,
        mssante_line(address="jean.martin@hop.example", rpps_id=rpps(1), family="MARTIN", given="Jean",
                     structure_id="R00001"),                                         # 2: known person
        mssante_line(address="new.doc@hop.example", rpps_id=rpps(50), family="NOUVEAU", given="Zoé",
                     demat="N"),                                                      # 3: unknown person
        mssante_line(address="labo@hop.example", bal_type="ORG", structure_id="S-LAB", service="Laboratoire",
                     site_name="Laboratoire Central", postal_code="69001", city_line="69001 LYON"),  # 4
        mssante_line(address="not an address", rpps_id=rpps(2)),                    # 5: bad mail
        mssante_line(address="x@hop.example", bal_type="XYZ"),                      # 6: bad type
        mssante_line(address="app@hop.example", bal_type="APP", structure_id="S-LAB"),  # 7
    ]
    path = write(tmp_path, "Extraction_Correspondance_MSSante_1.txt", "".join(lines))
    report = import_file(store, path)
    assert report.kind == "mssante"
    assert [r.line for r in report.rejected] == [5, 6]
    assert "not a mail address" in report.rejected[0].reason
    assert report.tables["mailboxes"].added == 4
    assert report.tables["persons"].added == 1  # only the unknown one
    [e] = dstore.search(store, parse("(mail=jean.martin@hop.example)"))
    assert (e.rpps, e.family_name, e.structure, e.bal_type) == (rpps(1), "MARTIN", "Cabinet 1", "PER")
    [e] = dstore.search(store, parse("(mail=labo@hop.example)"))
    assert (e.structure, e.city, e.service, e.display_name) == ("Laboratoire Central", "LYON", "Laboratoire",
                                                                 "Laboratoire")
    [e] = dstore.search(store, parse("(rppsId=" + rpps(50) + ")"))
    assert e.dematerialised is False and e.given_name == "Zoé"
    assert person(store, rpps(1)).source == "activity"  # the mailbox file did not take it over

    again = import_file(store, path)
    assert (again.added, again.updated, again.removed) == (0, 0, 0)

    # Newer: labo changes service, app gone, the new doctor's mailbox changes type (refused).
    lines2 = [lines[0], lines[1],
              mssante_line(address="new.doc@hop.example", bal_type="CAB", rpps_id=rpps(50), family="NOUVEAU"),
              lines[3].replace("|Laboratoire|", "|Biologie|")]
    newer = import_file(store, write(tmp_path, "m2.txt", "".join(lines2)))
    assert [r.reason for r in newer.rejected] == [
        "the type of mailbox new.doc@hop.example cannot change (PER to CAB)"]
    assert newer.tables["mailboxes"].updated == 1 and newer.tables["mailboxes"].removed == 1
    assert dstore.search(store, parse("(mail=app@hop.example)")) == []
    assert dstore.search(store, parse("(mail=labo@hop.example)"))[0].service == "Biologie"
    assert count(store, DirMailbox) == 3
