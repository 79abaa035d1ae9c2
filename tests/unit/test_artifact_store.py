"""The artifact store contract, held by every implementation (a directory, memory; an
object store would join the parametrization), and the byte-range rule the download
endpoint follows."""

from __future__ import annotations

import errno
import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest
from hypothesis import given
from hypothesis import strategies as st

from muto.cloud.api.artifacts import byte_range
from muto.cloud.artifacts.store import (
    ArtifactStore,
    DirectoryArtifacts,
    MemoryArtifacts,
    Unreadable,
    Unwritable,
)


def digest_of(blob: bytes) -> str:
    return f"sha256:{hashlib.sha256(blob).hexdigest()}"


@pytest.fixture(params=["directory", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ArtifactStore]:
    yield (
        DirectoryArtifacts(tmp_path / "artifacts")
        if request.param == "directory"
        else MemoryArtifacts()
    )


def put(store: ArtifactStore, blob: bytes, chunk: int = 7) -> bool:
    upload = store.begin(digest_of(blob))
    for at in range(0, len(blob), chunk):
        upload.write(blob[at : at + chunk])
    return upload.commit()


def read_all(store: ArtifactStore, digest: str, start: int, end: int) -> bytes:
    return b"".join(store.read(digest, start, end))


def test_an_unknown_digest_has_no_size(store: ArtifactStore) -> None:
    assert store.size(digest_of(b"nothing here")) is None


def test_what_is_committed_reads_back_whole_and_in_ranges(store: ArtifactStore) -> None:
    blob = bytes(range(256)) * 1500  # several read chunks
    assert put(store, blob) is True
    digest = digest_of(blob)
    assert store.size(digest) == len(blob)
    assert read_all(store, digest, 0, len(blob)) == blob
    assert read_all(store, digest, 1000, 300_001) == blob[1000:300_001]
    assert read_all(store, digest, len(blob) - 1, len(blob)) == blob[-1:]


def test_committing_the_same_digest_twice_keeps_one_and_says_so(store: ArtifactStore) -> None:
    assert put(store, b"abc") is True
    assert put(store, b"abc") is False
    assert read_all(store, digest_of(b"abc"), 0, 3) == b"abc"


def test_an_aborted_upload_leaves_nothing(store: ArtifactStore) -> None:
    upload = store.begin(digest_of(b"partial"))
    upload.write(b"part")
    upload.abort()
    assert store.size(digest_of(b"partial")) is None


def test_an_upload_is_invisible_until_committed(store: ArtifactStore) -> None:
    upload = store.begin(digest_of(b"slow"))
    upload.write(b"slow")
    assert store.size(digest_of(b"slow")) is None
    upload.commit()
    assert store.size(digest_of(b"slow")) == 4


def test_the_empty_artifact_is_stored(store: ArtifactStore) -> None:
    assert put(store, b"") is True
    assert store.size(digest_of(b"")) == 0
    assert read_all(store, digest_of(b""), 0, 0) == b""


def test_a_name_that_is_not_a_digest_is_refused(store: ArtifactStore) -> None:
    with pytest.raises(ValueError, match="sha256"):
        store.begin("../../etc/passwd")


def test_the_directory_store_leaves_no_upload_file_behind(tmp_path: Path) -> None:
    store = DirectoryArtifacts(tmp_path)
    put(store, b"kept")
    aborted = store.begin(digest_of(b"dropped"))
    aborted.write(b"dropped")
    aborted.abort()
    assert list((tmp_path / "incoming").iterdir()) == []


# -- byte ranges ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 10, (0, 10, False)),
        ("bytes=4-", 10, (4, 10, True)),
        ("bytes=2-5", 10, (2, 6, True)),
        ("bytes=2-500", 10, (2, 10, True)),
        ("bytes=-3", 10, (7, 10, True)),
        ("bytes=-30", 10, (0, 10, True)),
        ("bytes=0-1,4-5", 10, (0, 10, False)),  # several ranges: the whole
        ("items=1-2", 10, (0, 10, False)),  # another unit: ignored
        ("bytes=5-2", 10, (0, 10, False)),  # last before first: ignored
    ],
)
def test_byte_ranges(header: str | None, size: int, expected: tuple[int, int, bool]) -> None:
    assert byte_range(header, size) == expected


@pytest.mark.parametrize(("header", "size"), [("bytes=10-", 10), ("bytes=0-", 0), ("bytes=-0", 5)])
def test_a_range_that_selects_no_byte_is_unsatisfiable(header: str, size: int) -> None:
    with pytest.raises(ValueError):
        byte_range(header, size)


@given(st.integers(0, 10_000), st.integers(0, 10_000), st.integers(1, 10_000))
def test_a_resume_from_any_offset_inside_gets_exactly_the_rest(
    offset: int, last: int, size: int
) -> None:
    offset %= size
    start, end, partial = byte_range(f"bytes={offset}-", size)
    assert (start, end, partial) == (offset, size, True)
    start, end, _ = byte_range(f"bytes={offset}-{last}", size)
    assert 0 <= start < end <= size


def test_uploads_a_crash_cut_short_are_swept_when_old_and_kept_when_fresh(tmp_path: Path) -> None:
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    old, fresh = incoming / "old.part", incoming / "fresh.part"
    old.write_bytes(b"half")
    fresh.write_bytes(b"half")
    two_days_ago = time.time() - 2 * 86400
    os.utime(old, (two_days_ago, two_days_ago))
    DirectoryArtifacts(tmp_path)
    assert sorted(p.name for p in incoming.iterdir()) == ["fresh.part"]


# -- a store that cannot be written ---------------------------------------------------------


def test_a_directory_that_cannot_be_made_is_a_503_naming_it(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")  # a file where a directory should be: ENOTDIR
    root = tmp_path / "file" / "artifacts"
    with pytest.raises(Unwritable) as refused:
        DirectoryArtifacts(root).begin(digest_of(b"blob"))
    assert (refused.value.status, refused.value.code) == (503, "unavailable")
    assert f"cannot write to {root}: Not a directory (ENOTDIR)" in refused.value.message


class FullDisk:
    """A file on a full disk: every write and every sync is ENOSPC."""

    def __init__(self, real: BinaryIO) -> None:
        self.real = real

    def write(self, chunk: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def flush(self) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def fileno(self) -> int:
        return self.real.fileno()

    def close(self) -> None:
        self.real.close()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # what was buffered


@pytest.mark.parametrize("fails", ["write", "commit"])
def test_a_full_disk_is_a_503_and_leaves_no_upload_file(tmp_path: Path, fails: str) -> None:
    store = DirectoryArtifacts(tmp_path)
    upload = store.begin(digest_of(b"blob"))
    if fails == "commit":
        upload.write(b"blob")
    upload.file = FullDisk(upload.file)  # type: ignore[attr-defined]
    act = {"write": lambda: upload.write(b"blob"), "commit": upload.commit}[fails]
    with pytest.raises(Unwritable, match=r"No space left on device \(ENOSPC\); nothing was kept"):
        act()
    assert list((tmp_path / "incoming").iterdir()) == []
    assert store.size(digest_of(b"blob")) is None
    upload.abort()  # the handler aborts too: never raises


def test_a_sweep_that_cannot_delete_does_not_stop_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    old = incoming / "old.part"
    old.write_bytes(b"half")
    os.utime(old, (0, 0))

    def read_only(self: Path, missing_ok: bool = False) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(Path, "unlink", read_only)
    DirectoryArtifacts(tmp_path)  # starts; the file is swept once it can be


# -- a stored artifact that cannot be read --------------------------------------------------


def test_an_artifact_that_cannot_be_read_is_a_503_before_any_byte(tmp_path: Path) -> None:
    """Its file a loop of links (stat fails), or a directory (open fails): a 503 naming
    it, raised by `size` or `read` itself, not by the answer's first chunk."""
    store = DirectoryArtifacts(tmp_path)
    looped, folder = digest_of(b"looped"), digest_of(b"folder")
    for digest in (looped, folder):
        store._path(digest).parent.mkdir(parents=True, exist_ok=True)
    store._path(looped).symlink_to(store._path(looped))
    store._path(folder).mkdir()
    with pytest.raises(Unreadable, match=rf"cannot read {looped}: .*\(ELOOP\)") as refused:
        store.size(looped)
    assert (refused.value.status, refused.value.code) == (503, "unavailable")
    assert store.size(folder) is not None
    with pytest.raises(Unreadable, match=rf"cannot read {folder}: Is a directory \(EISDIR\)"):
        store.read(folder, 0, 1)
