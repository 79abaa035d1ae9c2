"""ArtifactVerifier and verify_file: the declared size is a hard cap, the digest decides."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.domain.release import Artifact, ArtifactType
from muto.trust.artifacts import ArtifactVerifier, measure_file, verify_file

DATA = b"a ROS 2 workspace overlay" * 100


def declared(data: bytes = DATA, size: int | None = None) -> Artifact:
    return Artifact(
        type=ArtifactType.ARCHIVE,
        ref="https://artifacts.example/overlay.tar.gz",
        digest="sha256:" + hashlib.sha256(data).hexdigest(),
        size=len(data) if size is None else size,
    )


def test_matching_bytes_pass_in_any_chunking() -> None:
    verifier = ArtifactVerifier(declared())
    for start in range(0, len(DATA), 7):
        verifier.update(DATA[start : start + 7])
    verifier.finish()


@pytest.mark.parametrize(
    ("artifact", "why"),
    [
        pytest.param(declared(DATA[::-1]), "digest", id="digest mismatch"),
        pytest.param(declared(size=len(DATA) + 1), "bytes, declared", id="under size"),
        pytest.param(declared(DATA[:-1]), "more than the declared", id="over size"),
    ],
)
def test_mismatch_is_rejected(artifact: Artifact, why: str) -> None:
    verifier = ArtifactVerifier(artifact)
    with pytest.raises(ReasonError) as failure:
        verifier.update(DATA)
        verifier.finish()
    assert failure.value.code == ReasonCode.ARTIFACT_DOWNLOAD_FAILED
    assert why in failure.value.detail


def test_endless_data_stops_at_the_first_chunk_past_the_cap() -> None:
    verifier = ArtifactVerifier(declared(size=10))
    verifier.update(b"x" * 10)
    with pytest.raises(ReasonError) as failure:
        verifier.update(b"x")  # not at finish(): a download is cut off as it overruns
    assert failure.value.code == ReasonCode.ARTIFACT_DOWNLOAD_FAILED


def test_verify_file_and_measure_file_agree(tmp_path: Path) -> None:
    path = tmp_path / "overlay.tar.gz"
    path.write_bytes(DATA)
    artifact = declared()
    assert measure_file(path) == (artifact.digest, artifact.size)
    verify_file(path, artifact)
    path.write_bytes(DATA[:-1] + b"!")
    with pytest.raises(ReasonError) as failure:
        verify_file(path, artifact)
    assert failure.value.code == ReasonCode.ARTIFACT_DOWNLOAD_FAILED
