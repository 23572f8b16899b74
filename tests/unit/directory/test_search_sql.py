"""Filters translated to SQL give the same entries as a direct evaluation in Python (the oracle),
on SQLite and PostgreSQL; unlisted entries never come out unless asked."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from directory import store as dstore
from directory.filters import And, Compare, Extensible, Not, Or, Present, Substrings, parse
from directory.identifiers import luhn_digit

FAMILIES = ["Martin", "Martinez", "Dupont", "Durand", "Lefèvre", "O'Neil", "Ma_rt%in"]
GIVENS = ["Jean", "Marie", None, "Anne"]
CITIES = ["Paris", "Lyon", None]


def rpps(n: int) -> str:
    body = f"1{n:09d}"
    return body + luhn_digit(body)


@pytest.fixture
def populated(store):
    s1 = dstore.add_structure(store, tech_id="F1", name="Laboratoire Bio", city="Paris", postal_code="75001")
    s2 = dstore.add_structure(store, tech_id="F2", name="Clinique du Lac", city="Lyon")
    rows = []
    for i in range(21):
        fam, giv = FAMILIES[i % 7], GIVENS[i % 4]
        pid = dstore.add_person(store, ident=rpps(i), family_name=fam, given_name=giv,
                                profession_code="10" if i % 2 else "60")
        sid = [s1, s2, None][i % 3]
        addr = f"user{i:02d}@mss.example"
        dstore.add_mailbox(store, address=addr, bal_type="PER", person_id=pid, structure_id=sid,
                           display_name=f"{giv or ''} {fam}".strip(), unlisted=(i % 5 == 4),
                           preferred_rank=1 + i % 3)
        rows.append({"mail": addr, "sn": fam, "givenname": giv, "rppsid": rpps(i),
                     "cn": f"{giv or ''} {fam}".strip(), "professioncode": "10" if i % 2 else "60",
                     "o": {s1: "Laboratoire Bio", s2: "Clinique du Lac"}.get(sid),
                     "l": {s1: "Paris", s2: "Lyon"}.get(sid), "preferredrank": 1 + i % 3,
                     "unlisted": i % 5 == 4})
    dstore.add_mailbox(store, address="labo@mss.example", bal_type="ORG", structure_id=s1,
                       display_name="Laboratoire Bio")
    rows.append({"mail": "labo@mss.example", "sn": None, "givenname": None, "rppsid": None,
                 "cn": "Laboratoire Bio", "professioncode": None, "o": "Laboratoire Bio", "l": "Paris",
                 "preferredrank": 1, "unlisted": False})
    return store, rows


def oracle(node, row):
    """Three-valued evaluation (True / False / None = Undefined), RFC 4511 section 4.5.1.7."""
    if isinstance(node, And):
        vals = [oracle(i, row) for i in node.items]
        return False if False in vals else (None if None in vals else True)
    if isinstance(node, Or):
        vals = [oracle(i, row) for i in node.items]
        return True if True in vals else (None if None in vals else False)
    if isinstance(node, Not):
        v = oracle(node.item, row)
        return None if v is None else not v
    if isinstance(node, Extensible):
        return None
    name = node.attr.lower()
    if name == "objectclass":
        if isinstance(node, Present):
            return True
        return node.value.lower() in {"top", "person", "organizationalperson", "inetorgperson", "mssmailbox"} \
            if isinstance(node, Compare) and node.op in ("=", "~=") else None
    if name not in row:
        return None
    v = row[name]
    if isinstance(node, Present):
        return v is not None
    if name == "preferredrank":
        if isinstance(node, Substrings):
            return None
        try:
            a = int(node.value)
        except ValueError:
            return None
        if v is None:
            return False
        return {"=": v == a, "~=": v == a, ">=": v >= a, "<=": v <= a}[node.op]
    if v is None:
        return False
    exact = name in ("rppsid", "professioncode")
    v = v if exact else v.lower()
    if isinstance(node, Substrings):
        f = (lambda x: x) if exact else str.lower
        pos = 0
        if node.initial is not None:
            if not v.startswith(f(node.initial)):
                return False
            pos = len(node.initial)
        for part in node.any:
            idx = v.find(f(part), pos)
            if idx < 0:
                return False
            pos = idx + len(part)
        return node.final is None or (v[pos:].endswith(f(node.final)) and len(v) - pos >= len(node.final))
    a = node.value.strip() if exact else node.value.lower()
    if node.op == "=":
        return v == a
    if node.op == "~=":
        return v.startswith(a) if not exact else v == a
    return v >= a if node.op == ">=" else v <= a


def expected(rows, node, include_unlisted=False):
    return sorted(r["mail"] for r in rows if oracle(node, r) is True and (include_unlisted or not r["unlisted"]))


CASES = [
    "(mail=USER01@mss.example)", "(sn=martin)", "(sn=mar*)", "(sn=*tin)", "(sn=*a*e*)", "(sn=d*d)",
    "(sn=ma_rt%in)", "(sn=ma_*)", "(givenName=*)", "(!(givenName=*))", "(rppsId=" + rpps(3) + ")",
    "(&(sn=mar*)(professionCode=10))", "(|(l=lyon)(o=labo*))", "(!(l=paris))", "(o~=clin)",
    "(preferredRank>=2)", "(preferredRank<=1)", "(preferredRank=x)", "(sn>=m)", "(sn<=d)",
    "(unknownAttr=1)", "(!(unknownAttr=1))", "(|(unknownAttr=1)(sn=durand))",
    "(&(unknownAttr=1)(sn=durand))", "(objectClass=inetOrgPerson)", "(objectClass=*)",
    "(!(objectClass=device))", "(cn:caseExactMatch:=Jean Martin)", "(sn=lef\\c3\\a8vre)", "(&)", "(|)",
    "(mail=user0*)",
    # ORs across tables (one indexed query per branch), nested, under NOT, with Undefined.
    "(|(sn=mar*)(mail=user0*)(o=labo*))", "(&(|(sn=mar*)(l=lyon))(professionCode=10))",
    "(!(|(sn=martin)(l=paris)))", "(|(unknownAttr=1)(l=lyon))", "(!(|(unknownAttr=1)(l=lyon)))",
]


@pytest.mark.parametrize("text", CASES)
def test_sql_matches_oracle(populated, text):
    store, rows = populated
    node = parse(text)
    got = [e.address for e in dstore.search(store, node)]
    assert got == expected(rows, node), text


def test_unlisted_never_published_unless_asked(populated):
    store, _rows = populated
    node = parse("(objectClass=*)")
    assert "user04@mss.example" not in [e.address for e in dstore.search(store, node)]
    assert "user04@mss.example" in [e.address for e in dstore.search(store, node, include_unlisted=True)]


def test_keyset_paging(populated):
    store, rows = populated
    node = parse("(objectClass=*)")
    pages, after = [], None
    while True:
        page = dstore.search(store, node, limit=5, after=after)
        if not page:
            break
        pages += [e.address for e in page]
        after = page[-1].address.lower()
    assert pages == expected(rows, node)


words = st.sampled_from(["ma", "mar", "tin", "du", "e", "jean", "lyon", "paris", "%", "_", "z", "10", "2"])
attrs = st.sampled_from(["sn", "givenName", "cn", "mail", "l", "o", "professionCode", "preferredRank", "foo"])
leaf = st.one_of(
    st.builds(Compare, attrs, st.sampled_from(["=", ">=", "<=", "~="]), words),
    st.builds(Present, attrs),
    st.builds(Substrings, attrs, st.none() | words, st.lists(words, max_size=2).map(tuple), st.none() | words),
)
tree = st.recursive(leaf, lambda t: st.one_of(
    st.builds(And, st.lists(t, max_size=3).map(tuple)), st.builds(Or, st.lists(t, max_size=3).map(tuple)),
    st.builds(Not, t)), max_leaves=6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree)
def test_random_filters_match_oracle(populated, node):
    store, rows = populated
    assert [e.address for e in dstore.search(store, node, include_unlisted=True)] == \
        expected(rows, node, include_unlisted=True)


def test_reader_inline_within_budget_else_pooled(populated):
    """The LDAP server's reader: SQLite answers inline; a query over its budget is interrupted and
    reported OVER_BUDGET, and runs to completion on a pooled connection; PostgreSQL always pools."""
    store, rows = populated
    reader = dstore.Reader(store, budget=0.05)
    try:
        sql, params = dstore.search_sql(parse("(sn=mar*)"), reader.dialect)
        got = reader.inline(dstore.fetch, sql, params)
        if reader.dialect != "sqlite":
            assert got is dstore.Reader.OVER_BUDGET
            got = reader.pooled(dstore.fetch, sql, params)
        assert [e.address for e in got] == expected(rows, parse("(sn=mar*)"))

        def slow(conn):  # millions of VM steps
            cur = conn.cursor()
            cur.execute("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000000) "
                        "SELECT count(*) FROM c")
            return cur.fetchone()[0]
        assert reader.inline(slow) is dstore.Reader.OVER_BUDGET
        assert reader.pooled(slow) == 3000000
    finally:
        reader.close()
