"""One at a time: a check made on the views and the write it guards, serialized across
every request of a deployment, so that two requests cannot both pass the check before
either write shows in the views (two overlapping rollouts started at once both passed
"no vehicle is in another active rollout").

In one process an asyncio lock; on PostgreSQL also a session advisory lock, so that API
processes on one database take turns. The holder waits for its write to be projected
(`ControlPlane.write`) before it lets the next one check.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import text
from starlette.requests import Request

from muto.cloud.api.context import plane

# pg_advisory_lock keys; the projector, the controller and the MQTT notifier hold
# 0x6D75746F, + 1 and + 2 for their process's lifetime (a shared key made POST /rollouts
# wait for ever on PostgreSQL with MQTT on).
KEYS = {"rollout-start": 0x6D75746F + 3}


@asynccontextmanager
async def one_at_a_time(request: Request, name: str) -> AsyncIterator[None]:
    locks: dict[str, asyncio.Lock] = request.app.state.__dict__.setdefault("exclusive", {})
    async with locks.setdefault(name, asyncio.Lock()):
        store = plane(request).views.store
        if not store.is_postgres:
            yield
            return
        connection = await asyncio.to_thread(store.engine.connect)
        try:
            await asyncio.to_thread(_advisory, connection, "pg_advisory_lock", KEYS[name])
            try:
                yield
            finally:
                await asyncio.to_thread(_advisory, connection, "pg_advisory_unlock", KEYS[name])
        finally:
            await asyncio.to_thread(connection.close)


def _advisory(connection: Any, function: str, key: int) -> None:
    connection.execute(text(f"SELECT {function}(:k)"), {"k": key})
    connection.commit()
