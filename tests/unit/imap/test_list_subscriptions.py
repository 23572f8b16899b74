"""LIST / LSUB / LIST-EXTENDED over the subscription list (mssmail/imap/names.py
`list_mailboxes`), sans-IO: imaptest's `listext` scenario, and properties over random
folder trees and subscription lists (RFC 3501 6.3.8-6.3.9, RFC 5258 3)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mssmail.imap import names
from mssmail.store.messages import FolderInfo

USER = "a@a.example"


def entries(*folders: str) -> list[names.Entry]:
    infos = [FolderInfo(f, None, False, 0, 0, 1, 1, 1) for f in ("INBOX", *folders)]
    return names.Namespace(USER).entries({USER: infos})


def listed(folders, subs, pattern, **kw) -> dict[str, tuple[set[str], bool]]:
    patterns = pattern if isinstance(pattern, list) else [pattern]
    out = names.list_mailboxes(entries(*folders), subs, "", patterns, **kw)
    return {i.name: ({a.lower() for a in i.attributes}, i.childinfo) for i in out}


# imaptest's listext: t6 was subscribed, then deleted.
TREE = ["m/t1", "m/t2/t1", "m/t3", "m/t4/t5", "m/t4/t52", "m/t7/t7", "m/t8/t8", "m/t8/t9"]
SUBS = ["m/t1", "m/t2/t1", "m/t6", "m/t7/t7", "m/t8/t8", "m/t8/t9"]


def test_subscribed_lists_a_deleted_folder_as_nonexistent():
    got = listed(TREE, SUBS, "m/*", select=["SUBSCRIBED"])
    assert set(got) == set(SUBS)
    assert got["m/t6"][0] == {"\\subscribed", "\\nonexistent"}  # RFC 5258 3.1 / 3.4
    assert all("\\subscribed" in attrs for attrs, _ in got.values())


def test_recursivematch_hints_only_at_descendants_the_patterns_miss():
    got = listed(TREE, SUBS, "m/t2%", select=["SUBSCRIBED", "RECURSIVEMATCH"])
    assert got == {"m/t2": ({"\\noselect", "\\haschildren"}, True)}
    got = listed(TREE, SUBS, "m*t8", select=["SUBSCRIBED", "RECURSIVEMATCH"])
    assert got["m/t8"][1] and "\\subscribed" not in got["m/t8"][0]
    assert got["m/t8/t8"] == ({"\\subscribed", "\\hasnochildren"}, False)
    got = listed(TREE, SUBS, "m*t7", select=["SUBSCRIBED", "RECURSIVEMATCH"])
    assert set(got) == {"m/t7/t7"}  # the child is listed itself: no hint at m/t7
    got = listed(TREE, SUBS, ["m/t2", "m/t2/t1"], select=["SUBSCRIBED", "RECURSIVEMATCH"])
    assert set(got) == {"m/t2/t1"}


def test_return_subscribed_and_children_on_a_plain_list():
    got = listed(TREE, SUBS, "m/%", returns=["CHILDREN", "SUBSCRIBED"])
    assert "m/t6" not in got  # LIST without SUBSCRIBED lists existing names only
    assert got["m/t1"][0] == {"\\subscribed", "\\hasnochildren"}
    assert got["m/t2"][0] == {"\\noselect", "\\haschildren"}


def test_lsub_shows_unsubscribed_parents_as_noselect():
    got = listed(["m/x", "m/y/z"], ["m/x", "m/y/z", "gone"], "m/%", lsub=True)
    assert got == {"m/x": (set(), False), "m/y": ({"\\noselect"}, False)}
    assert set(listed(["m/x"], ["m/x", "gone"], "*", lsub=True)) == {"m/x", "gone"}


level = st.sampled_from(["a", "b", "c"])
name = st.lists(level, min_size=1, max_size=3).map("/".join)
PATTERNS = st.sampled_from(["*", "%", "a/%", "a*", "%/b", "*c", "a", "b/*", "%/%"])


@given(st.sets(name, max_size=8), st.sets(name, max_size=6), PATTERNS)
def test_subscribed_selection_properties(folders, subs, pattern):
    existing = {e.name for e in entries(*folders)}
    regex = names.pattern_regex("", pattern)
    plain = listed(folders, subs, pattern, select=["SUBSCRIBED"])
    # Exactly the subscribed names that match; \NonExistent exactly when nothing is there.
    assert set(plain) == {s for s in subs if regex.match(s)}
    for n, (attrs, childinfo) in plain.items():
        assert "\\subscribed" in attrs and not childinfo
        assert ("\\nonexistent" in attrs) == (n not in existing)
    recursive = listed(folders, subs, pattern, select=["SUBSCRIBED", "RECURSIVEMATCH"])
    assert set(plain) <= set(recursive)
    for n, (_, childinfo) in recursive.items():
        hidden = [s for s in subs if s.startswith(n + "/") and not regex.match(s)]
        assert childinfo == bool(hidden), n
    if pattern == "*":
        assert recursive == plain  # everything matches: nothing to hint at


@given(st.sets(name, max_size=8), st.sets(name, max_size=6), PATTERNS)
def test_list_and_lsub_properties(folders, subs, pattern):
    existing = {e.name for e in entries(*folders)}
    regex = names.pattern_regex("", pattern)
    got = listed(folders, subs, pattern, returns=["SUBSCRIBED"])
    assert set(got) == {n for n in existing if regex.match(n)}
    assert {n for n, (a, _) in got.items() if "\\subscribed" in a} == set(got) & subs
    lsub = listed(folders, subs, pattern, lsub=True)
    assert {n for n, (a, _) in lsub.items() if not a} == {s for s in subs if regex.match(s)}
    for n, (attrs, _) in lsub.items():
        assert attrs in (set(), {"\\noselect"})
        if attrs:
            assert n not in subs and any(s.startswith(n + "/") for s in subs)
