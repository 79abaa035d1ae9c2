"""Where hosted artifacts live, behind `ArtifactStore`: a directory (the data dir's
`artifacts/`, the default) or memory (tests, a single process). An object store
implements the same small Protocol and passes the same contract tests
(tests/unit/test_artifact_store.py).

A store never checks content: `upload` (muto/cloud/api/artifacts.py) hashes the bytes
on their way in and commits only what matches the digest they claim. A store that cannot
keep bytes (read-only, not permitted, full) raises `Unwritable`, a 503 `unavailable`
naming where and why; nothing of that upload is kept."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

from muto.cloud.errors import AppError
from muto.domain.wire import DIGEST_PATTERN

DIGEST = re.compile(DIGEST_PATTERN)
CHUNK = 256 * 1024
logger = logging.getLogger("muto.cloud.artifacts")


class Unwritable(AppError):
    """The store cannot keep an upload now: an operator's to fix (a writable, shared
    volume; space), not a bug, and the rest of the API is unaffected."""

    status = 503
    code = "unavailable"


class Unreadable(AppError):
    """A stored artifact cannot be read now (its volume, its file): an operator's to
    fix, said before any byte of the answer is sent."""

    status = 503
    code = "unavailable"


class Upload(Protocol):
    def write(self, chunk: bytes) -> None: ...

    def commit(self) -> bool:
        """Make the bytes readable under the digest; False if it was there already."""
        ...

    def abort(self) -> None:
        """Forget the bytes written so far; never raises."""
        ...


class ArtifactStore(Protocol):
    def size(self, digest: str) -> int | None:
        """The stored artifact's size, or None if there is none."""
        ...

    def read(self, digest: str, start: int, end: int) -> Iterator[bytes]:
        """Bytes [start, end) of a stored artifact, in chunks."""
        ...

    def begin(self, digest: str) -> Upload:
        """An upload that becomes `digest` when committed. It, its `write` and its
        `commit` raise `Unwritable` when the store cannot keep the bytes."""
        ...


class DirectoryArtifacts:
    """`root/sha256/ab/<hex>`; uploads go to `root/incoming/` and are renamed into
    place once complete and synced, so a reader never sees half a file."""

    def __init__(self, root: Path, stale_upload_s: float = 86400.0) -> None:
        self.root = root
        self._sweep(stale_upload_s)
        if not _writable(root):  # said once at start: every upload would be a 503
            logger.warning(
                "hosted artifacts cannot be stored: %s is not writable; PUT /artifacts "
                "answers 503 until it is (--artifact-dir: a writable directory every API "
                "process shares, docs/deploy.md)",
                root,
            )

    def _sweep(self, older_than_s: float) -> None:
        """Drop what uploads cut short by a crash left in `incoming/` (a day old: another
        process sharing the directory may be receiving one right now). Best effort: a
        store that cannot be written now must not stop the process from starting."""
        cutoff = time.time() - older_than_s
        for part in (self.root / "incoming").glob("*.part"):
            with contextlib.suppress(OSError):
                if part.stat().st_mtime < cutoff:
                    part.unlink()

    def _path(self, digest: str) -> Path:
        if not DIGEST.match(digest):
            raise ValueError(f"not a sha256 digest: {digest!r}")
        hexa = digest.removeprefix("sha256:")
        return self.root / "sha256" / hexa[:2] / hexa

    def size(self, digest: str) -> int | None:
        try:
            return self._path(digest).stat().st_size
        except (FileNotFoundError, NotADirectoryError):  # no such file, nor its directory
            return None
        except OSError as exc:
            raise unreadable(self.root, digest, exc) from None

    def read(self, digest: str, start: int, end: int) -> Iterator[bytes]:
        """Opened here, not in the generator: a file that cannot be opened is a 503, not
        an answer cut off after its status line."""
        try:
            f = self._path(digest).open("rb")
        except OSError as exc:
            raise unreadable(self.root, digest, exc) from None
        return _chunks(f, start, end)

    def begin(self, digest: str) -> Upload:
        final = self._path(digest)
        incoming = self.root / "incoming"
        try:
            incoming.mkdir(parents=True, exist_ok=True)
            return _FileUpload(self.root, final, incoming / f"{uuid.uuid4().hex}.part")
        except OSError as exc:
            raise unwritable(self.root, exc) from None


def _writable(root: Path) -> bool:
    """Whether `root`, or the nearest directory above it that exists (it is made on the
    first upload), may be written: a read-only file system or mode says no; a full
    disk is only found by writing."""
    found = root
    while not found.exists() and found != found.parent:
        found = found.parent
    return os.access(found, os.W_OK)


def _chunks(f: BinaryIO, start: int, end: int) -> Iterator[bytes]:
    with f:
        f.seek(start)
        left = end - start
        while left > 0:
            chunk = f.read(min(CHUNK, left))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk


def _cause(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0)
    return f"{exc.strerror or exc}{f' ({name})' if name else ''}"


def unreadable(root: Path, digest: str, exc: OSError) -> Unreadable:
    """The 503 for a stored artifact that cannot be read, named (logged too)."""
    message = f"the artifact store at {root} cannot read {digest}: {_cause(exc)}"
    logger.warning("%s", message)
    return Unreadable(message)


def unwritable(root: Path, exc: OSError) -> Unwritable:
    """The 503 for an OSError of the store at `root`, naming the directory and the cause
    (logged too: the operator reads the server's log, the client the answer)."""
    cause = _cause(exc)
    message = (
        f"the artifact store cannot write to {root}: {cause}; nothing was kept (it needs "
        "a writable directory with room, shared by the API processes: --artifact-dir, "
        "docs/deploy.md)"
    )
    logger.warning("%s", message)
    return Unwritable(message)


class _FileUpload:
    def __init__(self, root: Path, final: Path, part: Path) -> None:
        self.root = root
        self.final = final
        self.part = part
        self.file = part.open("wb")

    def write(self, chunk: bytes) -> None:
        try:
            self.file.write(chunk)
        except OSError as exc:
            self.abort()
            raise unwritable(self.root, exc) from None

    def commit(self) -> bool:
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            if self.final.exists():
                self.part.unlink(missing_ok=True)
                return False
            self.final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.part, self.final)
            return True
        except OSError as exc:
            self.abort()
            raise unwritable(self.root, exc) from None

    def abort(self) -> None:
        # Closing flushes what is buffered, which fails again on a full disk: the file
        # is dropped either way.
        with contextlib.suppress(OSError):
            self.file.close()
        with contextlib.suppress(OSError):
            self.part.unlink(missing_ok=True)


class MemoryArtifacts:
    """The in-memory twin: same contract, nothing on disk."""

    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def size(self, digest: str) -> int | None:
        blob = self._blobs.get(digest)
        return None if blob is None else len(blob)

    def read(self, digest: str, start: int, end: int) -> Iterator[bytes]:
        blob = self._blobs[digest]
        for at in range(start, min(end, len(blob)), CHUNK):
            yield blob[at : min(at + CHUNK, end)]

    def begin(self, digest: str) -> Upload:
        if not DIGEST.match(digest):
            raise ValueError(f"not a sha256 digest: {digest!r}")
        return _MemoryUpload(self, digest)

    def _put(self, digest: str, blob: bytes) -> bool:
        with self._lock:
            if digest in self._blobs:
                return False
            self._blobs[digest] = blob
            return True


class _MemoryUpload:
    def __init__(self, store: MemoryArtifacts, digest: str) -> None:
        self.store = store
        self.digest = digest
        self.parts: list[bytes] = []

    def write(self, chunk: bytes) -> None:
        self.parts.append(chunk)

    def commit(self) -> bool:
        return self.store._put(self.digest, b"".join(self.parts))

    def abort(self) -> None:
        self.parts.clear()
