"""Which release archives the runtimes refuse to extract, and that a refused one writes
nothing anywhere (issue #14 item 1). The malicious archives are built byte by byte; none
depends on the Python patch level (3.11.7's tarfile `data` filter lets the first two
through)."""

from __future__ import annotations

import errno
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from muto.agent.runtime import archive as archive_module
from muto.agent.runtime.archive import extract_atomically
from muto.agent.runtime.archive_rules import (
    ArchiveLimits,
    ArchiveTree,
    Entry,
    UnsafeArchive,
    entry_of,
)
from muto.agent.runtime.file_list import damage, file_list_path
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from tests.support.archives import (
    Member,
    cve_2025_4517,
    file,
    folder,
    hardlink,
    symlink,
    write_archive,
    zeros_archive,
)

SEGMENT = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-.", min_size=1).filter(
    lambda s: s not in (".", "..")
)


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


@pytest.fixture
def vehicle(tmp_path: Path) -> Path:
    return agent_data(tmp_path)


def agent_data(base: Path) -> Path:
    """An agent data dir: a trust store beside the releases directory."""
    data = base / "data"
    (data / "runtime" / "releases").mkdir(parents=True)
    (data / "trust.json").write_text("{}")
    return data


def refused(archive: Path, target: Path) -> ReasonError:
    with pytest.raises(ReasonError) as caught:
        extract_atomically(archive, target)
    assert caught.value.code == ReasonCode.APPLY_FAILED
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # no staging left behind
    return caught.value


def everything_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def short_vehicle() -> Iterator[Path]:
    """`vehicle` under a short base path: the technique's 16 nested 247-character names
    nearly fill PATH_MAX, so under pytest's own temporary path (whose length grows with
    its run number) a directory could fail as too long before the rule under test ran."""
    base = Path(tempfile.mkdtemp(prefix="cve", dir="/tmp"))
    try:
        yield agent_data(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_cve_2025_4517_path_length_technique_is_refused(short_vehicle: Path) -> None:
    vehicle = short_vehicle
    before = everything_under(vehicle.parent)
    target = vehicle / "runtime" / "releases" / "evil@1.0.0-0123456789ab"
    archive = write_archive(vehicle.parent / "evil.tar.gz", cve_2025_4517("../../.."))
    before.add("evil.tar.gz")
    error = refused(archive, target)
    assert "goes through the symlink 'a'" in error.detail  # the first link used as a folder
    assert everything_under(vehicle.parent) == before  # nothing next to the trust store


def test_an_escaping_link_placed_before_the_link_it_relies_on_is_refused(vehicle: Path) -> None:
    # `e` alone reads as `outside` (inside); once `s -> .` exists, `s/..` is the parent.
    archive = write_archive(
        vehicle.parent / "order.tar.gz", [symlink("e", "s/../trust.json"), symlink("s", ".")]
    )
    error = refused(archive, vehicle / "runtime" / "releases" / "r")
    assert "'e'" in error.detail


@pytest.mark.parametrize(
    "members",
    [
        [file("../evil")],
        [file("/etc/evil")],
        [symlink("lib", "/etc")],
        [symlink("lib", "../../x")],
        [symlink("up", ".."), symlink("x", "up/up")],
        [symlink("a", "b"), symlink("b", "a")],  # a loop
        [symlink("lib", "."), file("lib/x")],  # a file written through a link
        [folder("lib"), symlink("lib/x", "../.."), file("lib/x/y")],
        [file("x"), file("x", b"replaced")],
        [file("x"), folder("x")],
        [hardlink("h", "../../trust.json")],
        [hardlink("h", "not-in-the-archive")],
        [symlink("s", "."), hardlink("h", "s/x")],
        [Member("dev/sda", tarfile.BLKTYPE)],
        [Member("pipe", tarfile.FIFOTYPE)],
        # Names and link targets that are not UTF-8 (tarfile keeps the bytes as
        # surrogates): the fuzz run found one made the file list unwritable.
        [file("\udc80name")],
        [symlink("s", "\udc80target")],
    ],
    ids=lambda ms: "+".join(m.name.encode("utf-8", "replace").decode() for m in ms),
)
def test_unsafe_archives_are_refused_whole(vehicle: Path, members: list[Member]) -> None:
    archive = write_archive(vehicle.parent / "bad.tar.gz", [file("ok"), *members])
    refused(archive, vehicle / "runtime" / "releases" / "r")


def test_a_small_archive_that_expands_past_the_limit_is_refused(vehicle: Path) -> None:
    archive = zeros_archive(vehicle.parent / "bomb.tar.gz", "zeros", 64 << 20)
    assert archive.stat().st_size < 256 << 10  # 64 MiB of zeros in well under 256 KiB
    target = vehicle / "runtime" / "releases" / "r"
    with pytest.raises(ReasonError) as caught:
        extract_atomically(archive, target, ArchiveLimits(max_total_bytes=16 << 20))
    assert caught.value.code == ReasonCode.APPLY_FAILED
    assert "16777216" in caught.value.detail
    assert not target.exists()


def test_member_count_and_size_are_bounded(vehicle: Path) -> None:
    releases = vehicle / "runtime" / "releases"
    many = write_archive(vehicle.parent / "many.tar.gz", [file(f"f{i}") for i in range(11)])
    with pytest.raises(ReasonError, match="more than 10 members"):
        extract_atomically(many, releases / "r", ArchiveLimits(max_members=10))
    big = write_archive(vehicle.parent / "big.tar.gz", [file("big", b"x" * 2000)])
    with pytest.raises(ReasonError, match="2000 bytes, over 1000"):
        extract_atomically(big, releases / "r", ArchiveLimits(max_member_bytes=1000))
    extract_atomically(big, releases / "r", ArchiveLimits(max_member_bytes=2000))
    assert (releases / "r" / "big").stat().st_size == 2000


def test_a_forged_giant_header_is_not_read_into_memory(vehicle: Path, tmp_path: Path) -> None:
    # A pax header claiming 64 MiB: tarfile would read it whole before any member check.
    import gzip

    header = tarfile.TarInfo("././@PaxHeader")
    header.type, header.size = tarfile.XHDTYPE, 64 << 20
    body = header.tobuf(tarfile.USTAR_FORMAT) + bytes(64 << 20)
    archive = tmp_path / "pax.tar.gz"
    archive.write_bytes(gzip.compress(body + bytes(1024), compresslevel=1))
    with pytest.raises(ReasonError, match="header or read of"):
        extract_atomically(archive, vehicle / "runtime" / "releases" / "r")


def test_a_good_overlay_is_extracted_with_safe_modes(vehicle: Path) -> None:
    archive = write_archive(
        vehicle.parent / "good.tar.gz",
        [
            folder("./"),
            folder("install"),
            file("install/setup.bash", b"echo hi", mode=0o4777),
            file("install/lib/libnav.so.1", b"ELF"),
            symlink("install/lib/libnav.so", "libnav.so.1"),
            symlink("install/share/lib", "../lib"),
            hardlink("install/copy", "install/setup.bash"),
            symlink("install/self", "."),
            symlink("install/dangling", "not/yet/there"),
        ],
    )
    target = vehicle / "runtime" / "releases" / "r"
    extract_atomically(archive, target)
    assert (target / "install/share/lib/libnav.so").read_bytes() == b"ELF"
    assert (target / "install/copy").read_bytes() == b"echo hi"
    assert os.stat(target / "install/setup.bash").st_mode & 0o7777 == 0o755
    assert os.stat(target).st_mode & 0o777 == 0o755


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT], ids=["ENOSPC", "EDQUOT"])
def test_a_full_disk_or_quota_while_extracting_is_insufficient_disk(
    vehicle: Path, code: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full quota is a full disk too: INSUFFICIENT_DISK, not APPLY_FAILED (the archive
    is fine), and nothing is left behind."""
    archive = write_archive(vehicle.parent / "good.tar.gz", [file("install/setup.bash", b"x")])

    def full(*_: object) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(archive_module, "_write_file", full)
    target = vehicle / "runtime" / "releases" / "r"
    with pytest.raises(ReasonError) as caught:
        extract_atomically(archive, target)
    assert caught.value.code == ReasonCode.INSUFFICIENT_DISK
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


OVERLAY = [
    folder("install"),
    file("install/setup.bash", b"echo hi", mode=0o755),
    file("install/lib/libnav.so.1", b"ELF"),
    symlink("install/lib/libnav.so", "libnav.so.1"),
    hardlink("install/copy", "install/setup.bash"),
]


@pytest.mark.parametrize(
    "change",
    [
        "edit-through-hardlink",
        "same-size-edit",
        "relink",
        "link-removed",
        "dir-removed",
        "another-archive",
        "list-damaged",
    ],
)
def test_damage_names_what_differs_from_the_archive(vehicle: Path, change: str) -> None:
    archive = write_archive(vehicle.parent / "overlay.tar.gz", OVERLAY)
    target, digest = vehicle / "runtime" / "releases" / "r", "sha256:" + "ab" * 32
    extract_atomically(archive, target, archive_digest=digest)
    (target / "written-by-the-release.log").write_text("not the archive's: not judged")
    assert damage(target, digest) is None
    if change == "edit-through-hardlink":
        (target / "install/copy").write_bytes(b"echo pwned")
    elif change == "same-size-edit":
        (target / "install/lib/libnav.so.1").write_bytes(b"ELG")
    elif change == "relink":
        (target / "install/lib/libnav.so").unlink()
        (target / "install/lib/libnav.so").symlink_to("/etc/passwd")
    elif change == "link-removed":
        (target / "install/lib/libnav.so").unlink()
    elif change == "dir-removed":
        shutil.rmtree(target / "install/lib")
    elif change == "list-damaged":
        file_list_path(target).write_bytes(b"{not json")
    problem = damage(target, "sha256:" + "cd" * 32 if change == "another-archive" else digest)
    assert problem is not None
    expected = {
        "edit-through-hardlink": "install/setup.bash is not the file the archive holds",
        "same-size-edit": "install/lib/libnav.so.1 is not the file the archive holds",
        "relink": "install/lib/libnav.so no longer links to libnav.so.1",
        "link-removed": "install/lib/libnav.so is missing or not a link",
        "dir-removed": "install/lib/ is missing or not a directory",
        "another-archive": "its file list is of another archive",
        "list-damaged": "its file list cannot be read",
    }[change]
    assert problem.startswith(expected), problem


@pytest.mark.parametrize(
    "unsafe",
    [
        member("/etc/cron.d/evil"),
        member("../evil"),
        member("install/../../evil"),
        member("dev/sda", tarfile.BLKTYPE),
        member("dev/null", tarfile.CHRTYPE),
        member("pipe", tarfile.FIFOTYPE),
    ],
)
def test_unsafe_members(unsafe: tarfile.TarInfo) -> None:
    with pytest.raises(UnsafeArchive):
        entry_of(unsafe)


@given(st.lists(SEGMENT, min_size=1, max_size=6))
def test_relative_paths_of_plain_segments_are_safe(segments: list[str]) -> None:
    entry = entry_of(member("/".join(segments)))
    ArchiveTree().add(entry)
    assert entry.parts == tuple(s for s in segments)


@given(st.lists(SEGMENT, max_size=4), st.lists(SEGMENT, max_size=4))
def test_any_parent_segment_is_unsafe(before: list[str], after: list[str]) -> None:
    with pytest.raises(UnsafeArchive):
        entry_of(member("/".join([*before, "..", *after])))


@given(st.lists(st.sampled_from(["a", "b", "..", "."]), max_size=8), st.integers(0, 3))
def test_link_resolution_never_lands_outside(target: list[str], depth: int) -> None:
    """Without other links, a link stays inside exactly when its lexical climb does."""
    tree = ArchiveTree()
    base = tuple("d" for _ in range(depth))
    landed = tree.resolve(base, "/".join(target))
    level = depth
    for part in target:
        level += {"..": -1, ".": 0}.get(part, 1)
        if level < 0:
            assert landed is None
            return
    assert landed is not None and len(landed) == level


def test_tree_counts_every_member_against_the_limits() -> None:
    tree = ArchiveTree(ArchiveLimits(max_members=2, max_total_bytes=10))
    tree.add(Entry(("a",), "file", size=6))
    with pytest.raises(UnsafeArchive, match="more than 10 bytes"):
        tree.add(Entry(("b",), "file", size=5))
