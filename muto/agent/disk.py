"""Whether a failure means the disk (or the agent's quota on it) is full: the one home of
that test on the agent. A full disk is reported INSUFFICIENT_DISK, never APPLY_FAILED or
AGENT_ERROR: the operator frees space, the release itself is fine.

Imports nothing of muto, so every part of the agent may use it (reports.py, runtime/*,
cache/*) without an import between its sub-packages.
"""

from __future__ import annotations

import errno

# The errnos of a full disk: no space left, or the user's quota used up.
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})

# How a subprocess (venv, pip) says so in its output: an OSError's text, `[Errno N]`
# and glibc's message for each (Python's messages are not translated).
FULL_SIGNS = (
    *(f"[Errno {code}]" for code in sorted(FULL_ERRNOS)),
    "No space left on device",
    "Disk quota exceeded",
)


def disk_full(exc: BaseException) -> bool:
    """An OSError that says the disk or the quota is full."""
    return isinstance(exc, OSError) and exc.errno in FULL_ERRNOS


def disk_full_output(text: str) -> bool:
    """A subprocess's output (venv, pip) that says the disk or the quota is full."""
    return any(sign in text for sign in FULL_SIGNS)
