"""A size-limited file system for disk-full scenarios: a tmpfs mounted by the test, and a
filler file that takes all but a chosen number of bytes. Mounting needs root and
mount(8); without them the scenario skips on a developer's machine and fails in CI
(CI=true), where a skipped disk-full scenario would pass without proving anything."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import unavailable

CHUNK = 64 * 1024


@contextlib.contextmanager
def small_fs(where: Path, size_mb: int) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        unavailable("a size-limited tmpfs needs root and mount(8)")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700", "tmpfs", str(where)],
        capture_output=True,
    )
    if mounted.returncode != 0:
        unavailable(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def fill(path: Path, leave: int = 0) -> Path:
    """Take all free space under `path` but `leave` bytes (as near as blocks allow)."""
    filler = path / f"filler-{len(list(path.glob('filler-*')))}"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while (free := free_bytes(path)) > leave:
            try:
                os.write(fd, b"\0" * min(CHUNK, max(free - leave, 4096)))
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    finally:
        os.close(fd)
    return filler


def make_room(path: Path) -> None:
    for filler in path.glob("filler-*"):
        filler.unlink()
