"""The `folder` target: drop a file into a directory the practice's software (DUI/LGC)
polls, exactly once across `kill -9`, with no help from that software.

Steps, each durable before the next (issue 13, part 6):
1. write `<dir>/.mss-tmp/<name>` (same filesystem as `<dir>`) and fsync it and its folder;
2. record "temp written" in the job (`record`, i.e. `Store.checkpoint_job`);
3. `os.replace` it into `<dir>/<name>` and fsync `<dir>`.
On a restart (the job claimed again after its lease ran out) with step 2 recorded: the
temp file still there means the rename did not happen, so it is redone; the temp file
gone means the rename happened (the software may already have taken and removed the
file): done, nothing written again. Without step 2 recorded the job starts over (a
half-written temp file is simply rewritten).

The connector worker usually takes steps 1 and 2 while routing the message
(`stage`: the temp file, fsynced, under a name of the route job's own, and the job
inserted with that step recorded, in the route's commit), then step 3 at once after
that commit (`publish_staged`; the target folders of a batch fsynced once each by
`sync_directories`): a file costs no claim and no checkpoint commit of its own, and a
crash anywhere leaves the job to `deliver` below, which resumes from the recorded temp
file. The temp name is the route job's attempt's (`<route job id>.<attempt>-<name>`), so
a second route of the same message (a sender sending it again: the same job key,
nothing inserted) never writes over the temp file the first one recorded; its own temp
file is removed, or, if a crash came first, left in `.mss-tmp/` where nothing
publishes it (nothing records it).

Why `os.replace` and not a link: the temp file disappears in the same atomic step as
the final one appears, so there is no moment where both exist and a restart could
publish the file a second time after the software removed the first. The name is
deterministic (`routing.output_name`), and a file of that name with *other* bytes is
never overwritten: that is a permanent error for an operator to look at.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

TMP_DIR = ".mss-tmp"


class PermanentError(Exception):
    """Retrying cannot help (a different file has the name, the input is gone).
    `code`: the ANS volet's error code (900-906) the peer gave, for the MDN."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class TemporaryError(Exception):
    """Retry later (the directory is missing or full, a permission being fixed)."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _same_bytes(path: Path, data: bytes) -> bool:
    try:
        if path.stat().st_size != len(data):
            return False
        return path.read_bytes() == data
    except FileNotFoundError:
        return False


def _publish(tmp: Path, final: Path, data: bytes) -> str:
    if final.exists():
        if not _same_bytes(final, data):
            raise PermanentError(f"{final.name} exists with other content; not overwritten")
        tmp.unlink(missing_ok=True)  # already published by an earlier attempt
        _fsync_dir(tmp.parent)
        return "present"
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    return "renamed"


def _check_name(name: str) -> None:
    if "/" in name or name.startswith(".") or not name:
        raise PermanentError(f"unsafe file name {name!r}")


def stage(directory: Path, name: str, data: bytes, route_job: int, attempt: int) -> Path:
    """Step 1 of a delivery done while routing: `<directory>/.mss-tmp/<route job>.<attempt>-<name>`
    written and fsynced (its folder is not: `sync_directories` does each folder once,
    before the commit that records the file). The temp file's path, or PermanentError /
    TemporaryError as `deliver` gives them (the job is then left to `deliver`).

    The name is the route job's attempt's own: an attempt's temp file is recorded only
    if that attempt commits, and then the route job is done and has no later attempt;
    so the temp files of this route job's earlier attempts (a crash, or a lease that
    ran out, before their commit) were never recorded and are removed here, and an
    earlier attempt still running somewhere never writes this attempt's file."""
    _check_name(name)
    tmp_dir = directory / TMP_DIR
    tmp = tmp_dir / f"{route_job}.{attempt}-{name}"
    try:
        if not directory.is_dir():
            raise TemporaryError(f"target directory {directory} does not exist")
        tmp_dir.mkdir(mode=0o750, exist_ok=True)
        for earlier in range(1, attempt):
            (tmp_dir / f"{route_job}.{earlier}-{name}").unlink(missing_ok=True)
        _write_synced(tmp, data)
    except OSError as exc:
        raise _os_error(directory, name, exc) from exc
    return tmp


def publish_staged(tmp: Path, final: Path, data: bytes) -> str:
    """Step 3 for a staged temp file (the job recorded it and was committed): rename it
    into place; the folder is fsynced by `sync_directories` before the job is completed.
    `written`; `present` (the same bytes were there already, the temp file is dropped);
    `delivered-before` (the temp file is gone: a worker that took the job over after its
    lease ran out renamed it). PermanentError when another file has the name."""
    try:
        if final.exists():
            if not _same_bytes(final, data):
                raise PermanentError(f"{final.name} exists with other content; not overwritten")
            tmp.unlink(missing_ok=True)
            return "present"
        os.replace(tmp, final)
    except FileNotFoundError:
        return "delivered-before"
    except OSError as exc:
        raise _os_error(final.parent, final.name, exc) from exc
    return "written"


def sync_directories(directories: Iterable[Path]) -> None:
    """fsync each folder once (a batch's renames or temp files in it are then durable)."""
    for directory in dict.fromkeys(directories):
        try:
            _fsync_dir(directory)
        except OSError as exc:
            raise _os_error(directory, "", exc) from exc


def _write_synced(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def _os_error(directory: Path, name: str, exc: OSError) -> Exception:
    if exc.errno in (errno.ENAMETOOLONG, errno.EISDIR):
        return PermanentError(f"{name}: {exc.strerror}")
    return TemporaryError(f"{directory}: {exc.strerror or exc}")


def recorded_temp(directory: Path, name: str, progress: Mapping[str, Any]) -> Path | None:
    """The temp file a job's progress records for `name` in `directory`: `deliver`'s own
    (`.mss-tmp/<name>`) or one staged while routing (`.mss-tmp/<tag>-<name>`); None if
    none is recorded (or the record names anything else)."""
    recorded = progress.get("tmp")
    if not isinstance(recorded, str):
        return None
    path = Path(recorded)
    if path.parent != directory / TMP_DIR or not (path.name == name or path.name.endswith("-" + name)):
        return None
    return path


def deliver(directory: Path, name: str, data: bytes, progress: Mapping[str, Any],
            record: Callable[[dict[str, Any]], None],
            after_record: Callable[[], None] | None = None) -> str:
    """Deliver `data` as `directory/name`; what happened: `written` (new file),
    `renamed` (a recorded temp file renamed after a restart), `delivered-before` (the
    recorded temp is gone: it was renamed before the restart), `present` (the same
    bytes were there already). `after_record` runs between steps 2 and 3 (tests kill
    the process there)."""
    _check_name(name)
    tmp_dir = directory / TMP_DIR
    tmp, final = tmp_dir / name, directory / name
    try:
        recorded = recorded_temp(directory, name, progress)
        if recorded is not None:
            if not recorded.exists():
                return "delivered-before"
            _publish(recorded, final, data)
            return "renamed"
        if final.exists():
            if _same_bytes(final, data):
                return "present"
            raise PermanentError(f"{name} exists with other content; not overwritten")
        if not directory.is_dir():
            raise TemporaryError(f"target directory {directory} does not exist")
        tmp_dir.mkdir(mode=0o750, exist_ok=True)
        _write_synced(tmp, data)
        _fsync_dir(tmp_dir)
        record({"tmp": str(tmp), "final": str(final)})
        if after_record is not None:
            after_record()
        return "written" if _publish(tmp, final, data) == "renamed" else "present"
    except (PermanentError, TemporaryError):
        raise
    except OSError as exc:
        raise _os_error(directory, name, exc) from exc
