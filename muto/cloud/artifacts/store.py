"""Where hosted artifacts live, behind `ArtifactStore`: a directory (the data dir's
`artifacts/`, the default) or memory (tests, a single process). An object store
implements the same small Protocol and passes the same contract tests
(tests/unit/test_artifact_store.py).

A store never checks content: `receive` (muto/cloud/artifacts/upload.py) hashes the
bytes on their way in and commits only what matches the digest they claim."""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from muto.domain.wire import DIGEST_PATTERN

DIGEST = re.compile(DIGEST_PATTERN)
CHUNK = 256 * 1024


class Upload(Protocol):
    def write(self, chunk: bytes) -> None: ...

    def commit(self) -> bool:
        """Make the bytes readable under the digest; False if it was there already."""
        ...

    def abort(self) -> None:
        """Forget the bytes written so far."""
        ...


class ArtifactStore(Protocol):
    def size(self, digest: str) -> int | None:
        """The stored artifact's size, or None if there is none."""
        ...

    def read(self, digest: str, start: int, end: int) -> Iterator[bytes]:
        """Bytes [start, end) of a stored artifact, in chunks."""
        ...

    def begin(self, digest: str) -> Upload:
        """An upload that becomes `digest` when committed."""
        ...


class DirectoryArtifacts:
    """`root/sha256/ab/<hex>`; uploads go to `root/incoming/` and are renamed into
    place once complete and synced, so a reader never sees half a file."""

    def __init__(self, root: Path, stale_upload_s: float = 86400.0) -> None:
        self.root = root
        self._sweep(stale_upload_s)

    def _sweep(self, older_than_s: float) -> None:
        """Drop what uploads cut short by a crash left in `incoming/` (a day old: another
        process sharing the directory may be receiving one right now)."""
        cutoff = time.time() - older_than_s
        for part in (self.root / "incoming").glob("*.part"):
            with contextlib.suppress(FileNotFoundError):
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
        except FileNotFoundError:
            return None

    def read(self, digest: str, start: int, end: int) -> Iterator[bytes]:
        with self._path(digest).open("rb") as f:
            f.seek(start)
            left = end - start
            while left > 0:
                chunk = f.read(min(CHUNK, left))
                if not chunk:
                    return
                left -= len(chunk)
                yield chunk

    def begin(self, digest: str) -> Upload:
        final = self._path(digest)
        incoming = self.root / "incoming"
        incoming.mkdir(parents=True, exist_ok=True)
        return _FileUpload(final, incoming / f"{uuid.uuid4().hex}.part")


class _FileUpload:
    def __init__(self, final: Path, part: Path) -> None:
        self.final = final
        self.part = part
        self.file = part.open("wb")

    def write(self, chunk: bytes) -> None:
        self.file.write(chunk)

    def commit(self) -> bool:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        if self.final.exists():
            self.part.unlink(missing_ok=True)
            return False
        self.final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.part, self.final)
        return True

    def abort(self) -> None:
        self.file.close()
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
