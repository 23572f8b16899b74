"""Free-text directory search (`mss directory search MARTIN`) on SQLite and PostgreSQL:
every word found somewhere, accents and case ignored, identifiers by their beginning."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from directory import store as dstore


@pytest.fixture
def filled(store):
    sid = dstore.add_structure(store, tech_id="F1", name="Clinique Martinière", city="Saint-Étienne")
    pid = dstore.add_person(store, ident="10003456786", family_name="Martin", given_name="Jean")
    dstore.add_mailbox(store, address="jean.martin@a.example", bal_type="PER", person_id=pid,
                       structure_id=sid)
    hid = dstore.add_person(store, ident="10000000009", family_name="Lefèvre", given_name="Hélène")
    dstore.add_mailbox(store, address="h.lefevre@a.example", bal_type="PER", person_id=hid)
    dstore.add_mailbox(store, address="accueil@a.example", bal_type="ORG", structure_id=sid)
    dstore.add_mailbox(store, address="secret@a.example", bal_type="ORG", structure_id=sid, unlisted=True)
    return store


def found(store, query, **kw):
    return [e.address for e in dstore.search_text(store, query, **kw)]


def test_words_accents_case_and_identifiers(filled):
    assert found(filled, "MARTIN") == ["accueil@a.example", "jean.martin@a.example"]  # structure too
    assert found(filled, "jean   martin") == ["jean.martin@a.example"]
    assert found(filled, "HELENE lefevre") == ["h.lefevre@a.example"]
    assert found(filled, "hélène") == ["h.lefevre@a.example"]
    assert found(filled, "etienne") == ["accueil@a.example", "jean.martin@a.example"]
    assert found(filled, "1000345") == ["jean.martin@a.example"]
    assert found(filled, "helene martin") == []
    assert found(filled, "secret") == []  # liste rouge is never published...
    assert found(filled, "secret", include_unlisted=True) == ["secret@a.example"]  # ...unless asked
    assert found(filled, "100%") == [] and found(filled, "_") == []  # LIKE wildcards are literal
    with pytest.raises(ValueError):
        dstore.search_text(filled, "   ")


def test_fold_matches_what_python_reads():
    assert dstore.fold("Hélène LEFÈVRE Œuvre") == "helene lefevre oeuvre"


@given(st.text(max_size=30))
def test_any_query_is_a_clause_or_a_clear_error(query):
    try:
        sql, params = dstore.text_clause(query, "sqlite")
    except ValueError:
        assert not [w for w in query.split() if dstore.fold(w)]
        return
    assert sql.count("?") == len(params)
