"""Failures that carry a reason code: the only kind of failure muto reports."""

from __future__ import annotations

from muto.domain.reasons import ReasonCode


class ReasonError(Exception):
    """A failure with a machine-readable reason code and optional human detail."""

    def __init__(self, code: ReasonCode, detail: str = "") -> None:
        super().__init__(f"{code}: {detail}" if detail else str(code))
        self.code = code
        self.detail = detail
