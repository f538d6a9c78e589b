"""The thin I/O edge shared by the v1 and v2 classes: one file, one value, one error.

Every failure becomes a ``CgroupError`` that names the operation, the file and
the value, as youki's ``common.rs`` does:
``failed to write '64' to /sys/fs/cgroup/pids/corral/web/pids.max: Invalid argument``.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ..errors import CgroupError

T = TypeVar("T")


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def read_file(path: Path) -> str:
    """Read a whole cgroupfs file.

    Raises:
        CgroupError: The file cannot be read (missing controller, removed cgroup).
    """
    try:
        return _read_text(path)
    except OSError as exc:
        raise CgroupError(f"failed to read {path}: {_reason(exc)}") from exc


def _read_text(path: Path) -> str:
    # os.read, not Path.read_text: no buffered text wrapper per file. A metrics
    # scrape reads ~16 files per container, so this is a third of its cost.
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode()


def read_optional(path: Path) -> str | None:
    """Read a file, or return ``None`` when it does not exist (controller absent, older kernel)."""
    try:
        return _read_text(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CgroupError(f"failed to read {path}: {_reason(exc)}") from exc


def read_parsed(path: Path, parse: Callable[[str], T]) -> T | None:
    """Read ``path`` with ``parse``; ``None`` when the file does not exist.

    Raises:
        CgroupError: The file exists but cannot be read or parsed.
    """
    text = read_optional(path)
    if text is None:
        return None
    try:
        return parse(text)
    except ValueError as exc:
        raise CgroupError(f"failed to parse {path}: {exc}") from exc


def write_file(path: Path, value: str) -> None:
    """Write one value to a cgroupfs file in a single write(2).

    cgroupfs parses each write(2) as one value, so the value must not be split.
    ``O_TRUNC`` is ignored by cgroupfs and keeps fixture trees (plain files) honest.

    Raises:
        CgroupError: The kernel refused the value or the file is missing.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    except OSError as exc:
        raise CgroupError(f"failed to write '{value}' to {path}: {_reason(exc)}") from exc
    try:
        os.write(fd, value.encode())
    except OSError as exc:
        raise CgroupError(f"failed to write '{value}' to {path}: {_reason(exc)}") from exc
    finally:
        os.close(fd)


def read_pids(path: Path) -> list[int]:
    """Read ``cgroup.procs``: one PID per line.

    Raises:
        CgroupError: The file cannot be read.
    """
    return [int(line) for line in read_file(path).split()]


def make_dirs(path: Path, stop: Path, on_created: Callable[[Path], None] | None = None) -> None:
    """mkdir ``path`` and its missing parents below ``stop``, top-down.

    ``on_created`` runs on each directory once it exists (created now or not),
    parent first, so a caller can prepare a level before its children appear
    (v1 cpuset must be filled before a child can be filled from it).

    Raises:
        CgroupError: A mkdir failed for another reason than the directory existing.
    """
    levels = [path, *path.parents]
    levels = levels[: levels.index(stop)] if stop in levels else [path]
    for level in reversed(levels):
        try:
            level.mkdir()
        except FileExistsError:
            pass
        except OSError as exc:
            raise CgroupError(f"failed to create cgroup {level}: {_reason(exc)}") from exc
        if on_created is not None:
            on_created(level)


def remove_dir(path: Path, *, timeout_s: float) -> None:
    """rmdir a cgroup directory, retrying on EBUSY for up to ``timeout_s``.

    A cgroup stays busy for a moment after its last process is killed, until
    the exit completes; runc and crun retry the same way. A missing directory
    is success: removal is idempotent.

    Raises:
        CgroupError: Still busy after the timeout, or another rmdir failure.
    """
    deadline = time.monotonic() + timeout_s
    delay = 0.005
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() >= deadline:
                raise CgroupError(f"failed to remove cgroup {path}: {_reason(exc)}") from exc
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def wait_until(predicate: Callable[[], bool], *, timeout_s: float) -> bool:
    """Poll ``predicate`` with a growing delay until true or ``timeout_s`` passed.

    Returns:
        Whether the predicate became true.
    """
    deadline = time.monotonic() + timeout_s
    delay = 0.001
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
