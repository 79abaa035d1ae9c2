"""Streaming verification of artifact bytes against the signed release.

Used while downloading: the declared size is a hard cap (endless-data attack), and
the digest is checked before the bytes are trusted (mix-and-match, tampering).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.domain.release import Artifact

CHUNK = 1 << 16


class ArtifactVerifier:
    """Feed chunks with `update`, then `finish`. Raises ReasonError
    (ARTIFACT_DOWNLOAD_FAILED) as soon as the bytes exceed the declared size,
    and at `finish` on a short read or a digest mismatch."""

    def __init__(self, artifact: Artifact) -> None:
        self.artifact = artifact
        self.size = 0
        self._hash = hashlib.sha256()

    def update(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.artifact.size:
            raise ReasonError(
                ReasonCode.ARTIFACT_DOWNLOAD_FAILED,
                f"{self.artifact.ref}: more than the declared {self.artifact.size} bytes",
            )
        self._hash.update(chunk)

    def finish(self) -> None:
        if self.size != self.artifact.size:
            raise ReasonError(
                ReasonCode.ARTIFACT_DOWNLOAD_FAILED,
                f"{self.artifact.ref}: {self.size} bytes, declared {self.artifact.size}",
            )
        actual = "sha256:" + self._hash.hexdigest()
        if actual != self.artifact.digest:
            raise ReasonError(
                ReasonCode.ARTIFACT_DOWNLOAD_FAILED,
                f"{self.artifact.ref}: digest {actual} != signed {self.artifact.digest}",
            )


def verify_file(path: Path, artifact: Artifact) -> None:
    """Re-verify bytes already on disk (cache hits are checked, not trusted)."""
    verifier = ArtifactVerifier(artifact)
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            verifier.update(chunk)
    verifier.finish()


def measure_file(path: Path) -> tuple[str, int]:
    """The digest and size a release declares for these bytes (used when signing)."""
    sha = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return "sha256:" + sha.hexdigest(), size
