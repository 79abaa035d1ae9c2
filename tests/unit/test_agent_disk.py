"""The agent's one test of a full disk (muto/agent/disk.py): no space, or no quota."""

from __future__ import annotations

import errno
import os

import pytest

from muto.agent.disk import disk_full, disk_full_output


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_no_space_and_no_quota_are_a_full_disk(code: int) -> None:
    exc = OSError(code, os.strerror(code))
    assert disk_full(exc)
    assert disk_full_output(f"ERROR: Could not install packages due to an OSError: {exc}")


@pytest.mark.parametrize(
    "exc",
    [
        OSError(errno.EACCES, "Permission denied"),
        OSError("no errno"),
        TimeoutError(),
        ValueError("No space left on device"),  # only an OSError's errno counts
    ],
)
def test_other_failures_are_not(exc: BaseException) -> None:
    assert not disk_full(exc)


def test_other_output_is_not() -> None:
    assert not disk_full_output("ERROR: No matching distribution found for nav==1.0")
