"""Fuzzing the release archive extractor (issue #14): archives built from a grammar of
hostile members (climbing names, absolute and chained links, links used as folders,
duplicates, hard links, long names) and archives whose tar bytes are mutated at random.

Whatever the input, `extract_atomically` either refuses with a reason code and leaves
nothing behind, or extracts a tree where every link resolves inside it; nothing outside
the release directory ever changes, and no other exception escapes. Bounded in `make test`;
`make test-faults` (MUTO_FAULT_RUNS=full) runs the long count."""

from __future__ import annotations

import gzip
import itertools
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from muto.agent.runtime.archive import extract_atomically
from muto.agent.runtime.archive_rules import ArchiveLimits
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from tests.faults.runs import runs
from tests.support.archives import Member, file, folder, hardlink, symlink, tar_bytes

PLAIN = st.sampled_from(["a", "b", "c", "d" * 200, "out"])
ODD = st.sampled_from(["..", ".", "", "e\\.."])
NAMES = st.lists(st.one_of(PLAIN, PLAIN, PLAIN, ODD), min_size=1, max_size=5).map("/".join)
# Link targets climb more often: "..", through other links, out of the tree.
TARGETS = st.one_of(
    st.lists(st.one_of(PLAIN, st.just("..")), min_size=1, max_size=6).map("/".join),
    NAMES.map(lambda n: "/" + n),
    st.just("../outside/x"),
)
MEMBERS = st.one_of(
    st.builds(file, NAMES, st.binary(max_size=64)),
    st.builds(folder, NAMES),
    st.builds(symlink, NAMES, TARGETS),
    st.builds(hardlink, NAMES, TARGETS),
)
ARCHIVES = st.lists(MEMBERS, max_size=12)
LIMITS = ArchiveLimits(max_members=10, max_member_bytes=48, max_total_bytes=256)
COUNTER = itertools.count()


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def extract_and_check(box: Path, data: bytes) -> None:
    """Extract `data` (gzip) under box/vehicle/releases; check the invariants."""
    vehicle = box / "vehicle"
    (vehicle / "releases").mkdir(parents=True)
    (vehicle / "trust.json").write_text("{}")
    (box / "outside").mkdir()
    archive = box / "release.tar.gz"
    archive.write_bytes(data)
    before = snapshot(box)
    target = vehicle / "releases" / "nav@1.0.0-0123456789ab"
    try:
        extract_atomically(archive, target, LIMITS)
    except ReasonError as exc:
        assert exc.code in (ReasonCode.APPLY_FAILED, ReasonCode.INSUFFICIENT_DISK)
        assert snapshot(box) == before  # refused whole: not one byte anywhere
        return
    after = snapshot(box)
    inside = f"vehicle/releases/{target.name}"
    assert {p for p in after if not p.startswith(inside)} == before - {""}
    real = target.resolve()
    for path in target.rglob("*"):
        if path.is_symlink():  # (a link's own mode is always 0777 on Linux)
            assert Path(os.path.realpath(path)).is_relative_to(real), path
        else:
            assert not (path.stat().st_mode & 0o022), path


@pytest.mark.parametrize("count", runs(150, 20_000))
def test_hostile_member_lists(tmp_path: Path, count: int) -> None:
    @settings(
        max_examples=count,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(ARCHIVES)
    def check(members: list[Member]) -> None:
        extract_and_check(tmp_path / str(next(COUNTER)), gzip.compress(tar_bytes(members), 1))

    check()


@pytest.mark.parametrize("count", runs(150, 20_000))
def test_mutated_tar_bytes(tmp_path: Path, count: int) -> None:
    @settings(
        max_examples=count,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(ARCHIVES, st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=8))
    def check(members: list[Member], flips: list[tuple[int, int]]) -> None:
        raw = bytearray(tar_bytes(members))
        for position, value in flips:
            raw[position % len(raw)] = value
        extract_and_check(tmp_path / str(next(COUNTER)), gzip.compress(bytes(raw), 1))

    check()
