"""Who asked for a write, stored on every event it makes."""

from __future__ import annotations

import uuid
from dataclasses import dataclass


@dataclass(frozen=True)
class Cause:
    """Who asked (an operator token id, a vehicle id, `controller`) and the thread of
    intent it belongs to. Stored on every event."""

    actor: str
    correlation_id: str

    @classmethod
    def of(cls, actor: str, correlation_id: str | None = None) -> Cause:
        return cls(actor, correlation_id or str(uuid.uuid4()))
