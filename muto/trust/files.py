"""Files with explicit modes whatever the umask, and atomic file replacement.

Every data file and directory muto creates goes through here: directories 0700, secrets
and databases 0600 (the umask may only narrow a mode given to open/mkdir, and an operator's
`umask 000` must not widen it), public material 0644.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
PUBLIC_FILE_MODE = 0o644


def private_dir(path: Path) -> Path:
    """`path` and any missing parent, created 0700. An existing directory keeps its mode
    (the operator chose it)."""
    missing = []
    for folder in (path, *path.parents):
        if folder.is_dir():
            break
        missing.append(folder)
    for folder in reversed(missing):
        try:
            folder.mkdir(PRIVATE_DIR_MODE)
        except FileExistsError:
            continue  # made meanwhile by someone else: theirs to set
        os.chmod(folder, PRIVATE_DIR_MODE)  # mkdir's mode is narrowed by the umask only
    return path


def private_file(path: Path) -> Path:
    """Create `path` empty and 0600 if it is missing (e.g. before SQLite creates a database
    with the umask's mode; its -wal and -shm files copy the database file's mode)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, PRIVATE_FILE_MODE)
    except FileExistsError:
        return path
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)
    finally:
        os.close(fd)
    return path


def write_new(path: Path, data: bytes, mode: int) -> None:
    """Write a file that must not exist yet (O_EXCL: never replaces), with exactly `mode`
    from the start: the bytes are never readable with a wider mode, not even for a moment."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), mode)
        f.write(data)


def atomic_write(path: Path, data: bytes | Iterable[bytes], mode: int = PRIVATE_FILE_MODE) -> None:
    """Temp file in the same directory (created 0600), fsync, chmod to `mode`, rename over
    `path`, fsync the directory (so the rename itself survives a power cut). `data` may
    be chunks, written as they come (an export that must not hold the log in memory);
    one that fails leaves `path` as it was."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, bytes):
                f.write(data)
            else:
                f.writelines(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
