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

Why `os.replace` and not a link: the temp file disappears in the same atomic step as
the final one appears, so there is no moment where both exist and a restart could
publish the file a second time after the software removed the first. The name is
deterministic (`routing.output_name`), and a file of that name with *other* bytes is
never overwritten: that is a permanent error for an operator to look at.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Mapping
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


def deliver(directory: Path, name: str, data: bytes, progress: Mapping[str, Any],
            record: Callable[[dict[str, Any]], None],
            after_record: Callable[[], None] | None = None) -> str:
    """Deliver `data` as `directory/name`; what happened: `written` (new file),
    `renamed` (a recorded temp file renamed after a restart), `delivered-before` (the
    recorded temp is gone: it was renamed before the restart), `present` (the same
    bytes were there already). `after_record` runs between steps 2 and 3 (tests kill
    the process there)."""
    if "/" in name or name.startswith("."):
        raise PermanentError(f"unsafe file name {name!r}")
    tmp_dir = directory / TMP_DIR
    tmp, final = tmp_dir / name, directory / name
    try:
        if progress.get("tmp") == str(tmp):
            if not tmp.exists():
                return "delivered-before"
            _publish(tmp, final, data)
            return "renamed"
        if final.exists():
            if _same_bytes(final, data):
                return "present"
            raise PermanentError(f"{name} exists with other content; not overwritten")
        if not directory.is_dir():
            raise TemporaryError(f"target directory {directory} does not exist")
        tmp_dir.mkdir(mode=0o750, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_dir(tmp_dir)
        record({"tmp": str(tmp), "final": str(final)})
        if after_record is not None:
            after_record()
        return "written" if _publish(tmp, final, data) == "renamed" else "present"
    except (PermanentError, TemporaryError):
        raise
    except OSError as exc:
        if exc.errno in (errno.ENAMETOOLONG, errno.EISDIR):
            raise PermanentError(f"{name}: {exc.strerror}") from exc
        raise TemporaryError(f"{directory}: {exc.strerror or exc}") from exc
