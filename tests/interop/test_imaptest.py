"""Dovecot's imaptest, the IMAP compliance tester Dovecot, mox and Stalwart test against,
runs its scripted test groups against a real `mss serve --only imap` over IMAPS.

Each group (one file in imaptest's `src/tests`) logs in with one to three connections,
creates the `imaptest` folder, appends the messages of its `.mbox` file and checks every
response of every command against what the script expects, including the untagged
responses other connections must see. imaptest prints one `*** Test <group> ...` block
per failed command and an `Error:` line for protocol violations it notices on the way
(a keyword used without being announced in FLAGS, a BAD reply); this test fails on any.

A group whose `capabilities:` header names one mss does not announce is skipped by
imaptest without a word; `NOT_ANNOUNCED` lists those capabilities, so announcing one
makes its groups run (and then they must pass), and dropping one from CAPABILITY fails
here until the list says so. imaptest is built by `tests/data/imaptest/build.sh` (cached;
under a minute the first time) from the source tarball beside it.
"""

from __future__ import annotations

import imaplib
import os
import re
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.instance import ROOT, MssInstance

pytestmark = pytest.mark.timeout(900)

BUILD = ROOT / "tests" / "data" / "imaptest" / "build.sh"
DOMAIN = "a.example"
USER = f"jean.martin@{DOMAIN}"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# Capabilities some imaptest groups need that mss does not announce (yet); each is
# documented in docs/imap.md. Upper case.
NOT_ANNOUNCED = {
    "CONTEXT=SORT",
    "URLAUTH", "URLAUTH=BINARY",
}

# Groups that still fail on mss, each for a reason in docs/imap.md. The test fails when
# a group outside this set fails, and when one in it passes (then it leaves the set).
KNOWN_FAILING: set[str] = set()

# Every group imaptest runs against mss (not skipped for a capability), and so must pass:
# announcing a capability makes more groups run, and they go here with it.
MUST_PASS = {
    "append", "append-binary", "atoms", "catenate", "catenate-multiappend", "close", "copy", "esearch", "esearch-condstore", "esort", "expunge",
    "expunge2", "fetch", "fetch-body", "fetch-body-message-rfc822", "fetch-body-message-rfc822-mime",
    "fetch-body-message-rfc822-x2", "fetch-body-mime", "fetch-bodystructure", "fetch-envelope", "fetch-binary-mime",
    "fetch-binary-mime-base64", "fetch-binary-mime-qp", "id",
    "list", "listext", "logout", "move", "multiappend", "mutf7", "nil", "notify", "pipeline", "search-addresses",
    "search-body", "search-context-update", "search-context-update2", "search-context-update3",
    "search-date", "search-flags", "search-header", "search-partial", "search-sets", "search-size",
    "select", "sort-addresses", "sort-arrival", "sort-date", "sort-display-from", "sort-display-to",
    "sort-size", "sort-subject", "store", "subscribe", "thread", "thread-orderedsubject",
    "thread-orderedsubject2", "thread2", "thread3", "thread4", "thread5", "thread6", "thread7",
    "thread8", "uidplus", "uidvalidity", "uidvalidity-rename",
}


@dataclass
class ImaptestRun:
    """What one imaptest run printed, sorted by group."""

    output: str
    failed_groups: dict[str, list[str]] = field(default_factory=dict)  # group -> its blocks
    errors: list[str] = field(default_factory=list)
    summary: dict[str, tuple[int, int]] = field(default_factory=dict)  # "base" -> (failed, total)
    groups: int = 0
    groups_failed: int = -1


FAILURE = re.compile(r"^\*\*\* Test (\S+) ")
SUMMARY_GROUPS = re.compile(r"^(\d+) test groups: (\d+) failed")
SUMMARY_COMMANDS = re.compile(r"^(base protocol|extensions): (\d+)/(\d+) individual commands failed")


def parse_output(text: str) -> ImaptestRun:
    """Split imaptest's output into failed groups (their whole block), errors and totals."""
    run = ImaptestRun(text)
    current: list[str] | None = None
    for line in text.splitlines():
        failure = FAILURE.match(line)
        if failure:
            current = [line]
            run.failed_groups.setdefault(failure.group(1), []).append("")
            run.failed_groups[failure.group(1)][-1] = line
            continue
        if line.startswith("Error:") or line.startswith("Fatal:") or line.startswith("Panic:"):
            run.errors.append(line)
            current = None
            continue
        groups = SUMMARY_GROUPS.match(line)
        if groups:
            run.groups, run.groups_failed = int(groups.group(1)), int(groups.group(2))
            current = None
            continue
        commands = SUMMARY_COMMANDS.match(line)
        if commands:
            key = "base" if commands.group(1) == "base protocol" else "extensions"
            run.summary[key] = (int(commands.group(2)), int(commands.group(3)))
            continue
        if current is not None and line.strip():
            current.append(line)
            group = FAILURE.match(current[0]).group(1)  # type: ignore[union-attr]
            run.failed_groups[group][-1] = "\n".join(current)
    return run


def group_capabilities(tests_dir: Path) -> dict[str, set[str]]:
    """Each scripted group and the capabilities its header requires (upper case)."""
    out: dict[str, set[str]] = {}
    for path in sorted(tests_dir.iterdir()):
        if not path.is_file() or path.suffix == ".mbox":
            continue
        needed: set[str] = set()
        for line in path.read_text(errors="replace").splitlines():
            if not line.strip():
                break  # the header ends at the first blank line
            key, _, value = line.partition(":")
            if key.strip().lower() == "capabilities":
                needed.update(word.upper() for word in value.split())
        out[path.name] = needed
    return out


@pytest.fixture(scope="session")
def imaptest_bin() -> Path:
    try:
        result = subprocess.run([str(BUILD)], capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError("building imaptest took more than 15 minutes") from exc
    if result.returncode != 0:
        message = f"imaptest could not be built:\n{result.stderr[-3000:]}"
        if IN_CI:
            raise AssertionError(message)
        pytest.skip(message)
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MssInstance]:
    inst = MssInstance(tmp_path_factory.mktemp("imaptest") / "a", DOMAIN)
    inst.configure("imap", "poll_interval", "1")
    inst.start("imap", "index")  # the full-text indexer too: SEARCH answers must not change
    yield inst
    assert inst.stop() == 0


def announced(inst: MssInstance) -> set[str]:
    """mss's CAPABILITY after login, as imaptest sees it (it checks post-login)."""
    context = ssl.create_default_context(cafile=str(inst.ca_file))
    with imaplib.IMAP4_SSL("127.0.0.1", inst.ports["imaps"], ssl_context=context, timeout=60) as client:
        client.login(USER, inst.passwords[USER])
        typ, data = client.capability()
        assert typ == "OK"
        return {word.upper() for word in data[0].decode().split()}


def run_imaptest(binary: Path, inst: MssInstance, test: Path, timeout: float = 600) -> ImaptestRun:
    args = [str(binary), "host=127.0.0.1", f"port={inst.ports['imaps']}", "ssl=any-cert",
            f"user={USER}", f"pass={inst.passwords[USER]}", f"test={test}"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    return parse_output(result.stdout + result.stderr)


def test_parse_output_finds_every_failure_and_error() -> None:
    """The parser this test relies on, against output in imaptest's own format."""
    text = (
        "*** Test select command 3/9 (line 7)\n"
        " - failed: Missing 1 untagged replies (4 mismatches)\n"
        " - Command: examine $mailbox\n\n"
        "Error: u@x[3]: Keyword used without being in FLAGS: $hello: * 2 FETCH (FLAGS ($hello))\n"
        "*** Test select command 5/9 (line 18)\n - failed: Unexpected untagged match\n"
        "*** Test copy initialization failed: Unexpected disconnection\n"
        "71 test groups: 2 failed, 0 skipped due to missing capabilities\n"
        "base protocol: 3/457 individual commands failed\n"
        "extensions: 0/70 individual commands failed\n")
    run = parse_output(text)
    assert sorted(run.failed_groups) == ["copy", "select"]
    assert len(run.failed_groups["select"]) == 2
    assert "Missing 1 untagged" in run.failed_groups["select"][0]
    assert len(run.errors) == 1 and "Keyword used" in run.errors[0]
    assert (run.groups, run.groups_failed) == (71, 2)
    assert run.summary == {"base": (3, 457), "extensions": (0, 70)}


def test_imaptest_scripted_groups_pass(imaptest_bin: Path, server: MssInstance) -> None:
    tests_dir = imaptest_bin.parent / "tests"
    needs = group_capabilities(tests_dir)
    have = announced(server)
    missing_everywhere = set().union(*needs.values()) - have
    assert missing_everywhere == NOT_ANNOUNCED, (
        "the capabilities imaptest groups need and mss does not announce changed: "
        f"now missing {sorted(missing_everywhere)}; update NOT_ANNOUNCED and docs/imap.md")
    skipped = sorted(name for name, caps in needs.items() if caps - have)
    ran = set(needs) - set(skipped)
    assert ran == MUST_PASS, (f"groups that run now but are not in MUST_PASS: {sorted(ran - MUST_PASS)}; "
                              f"in MUST_PASS but skipped: {sorted(MUST_PASS - ran)}")
    run = run_imaptest(imaptest_bin, server, tests_dir)
    unexpected = {g: b for g, b in run.failed_groups.items() if g not in KNOWN_FAILING}
    report = "\n\n".join(block for blocks in unexpected.values() for block in blocks)
    assert not unexpected, f"imaptest groups failed: {sorted(unexpected)}\n{report[:20000]}"
    fixed = KNOWN_FAILING - set(run.failed_groups)
    assert not fixed, f"these groups pass now: take them out of KNOWN_FAILING: {sorted(fixed)}"
    assert not run.errors, "imaptest reported protocol errors:\n" + "\n".join(run.errors[:100])
    assert run.groups == len(needs) and run.groups_failed == len(KNOWN_FAILING), run.output[-3000:]
    if not KNOWN_FAILING:
        assert run.summary["base"][0] == 0 and run.summary["extensions"][0] == 0, run.output[-3000:]
    # Every group that is not skipped for a capability ran commands: a group that
    # silently does nothing would hide a regression.
    assert run.summary["base"][1] > 400, run.output[-3000:]
    print(f"imaptest: {run.groups} groups, {len(skipped)} skipped for capabilities "
          f"({', '.join(skipped)}); base {run.summary['base']}, extensions {run.summary['extensions']}")
