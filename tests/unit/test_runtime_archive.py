"""Which archive members a runtime refuses to extract."""

from __future__ import annotations

import tarfile

import pytest
from hypothesis import given
from hypothesis import strategies as st

from muto.agent.runtime.archive import unsafe_reason

SEGMENT = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-.", min_size=1).filter(
    lambda s: s not in (".", "..")
)


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


@pytest.mark.parametrize(
    "unsafe",
    [
        member("/etc/cron.d/evil"),
        member("../evil"),
        member("install/../../evil"),
        member("lib/x", tarfile.SYMTYPE, "/etc/passwd"),
        member("lib/x", tarfile.SYMTYPE, "../../etc"),
        member("x", tarfile.LNKTYPE, "../outside"),
        member("x", tarfile.LNKTYPE, "/etc/shadow"),
        member("dev/sda", tarfile.BLKTYPE),
        member("dev/null", tarfile.CHRTYPE),
        member("pipe", tarfile.FIFOTYPE),
    ],
)
def test_unsafe_members(unsafe: tarfile.TarInfo) -> None:
    assert unsafe_reason(unsafe) is not None


@pytest.mark.parametrize(
    "safe",
    [
        member("install/setup.bash"),
        member("install/nav/lib/libnav.so", tarfile.SYMTYPE, "libnav.so.1"),
        member("install/nav/share/lib", tarfile.SYMTYPE, "../../lib"),
        member("install/copy", tarfile.LNKTYPE, "install/setup.bash"),
        member("install", tarfile.DIRTYPE),
    ],
)
def test_safe_members(safe: tarfile.TarInfo) -> None:
    assert unsafe_reason(safe) is None


@given(st.lists(SEGMENT, min_size=1, max_size=6))
def test_relative_paths_of_plain_segments_are_safe(segments: list[str]) -> None:
    assert unsafe_reason(member("/".join(segments))) is None


@given(st.lists(SEGMENT, max_size=4), st.lists(SEGMENT, max_size=4))
def test_any_parent_segment_is_unsafe(before: list[str], after: list[str]) -> None:
    assert unsafe_reason(member("/".join([*before, "..", *after]))) is not None
