"""MQTT bridge of the control plane: retained desired/notify out, reports and presence in.

`bridge_factory(plane)` is an async context manager factory for `create_app(...,
extensions=[bridge_factory])`; it yields `{"bridge": bridge}` where `bridge.connected`
tells whether the broker link is up.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from muto.cloud.bootstrap import ControlPlane


@asynccontextmanager
async def bridge_factory(plane: ControlPlane) -> AsyncIterator[dict[str, Any]]:
    from muto.cloud.mqtt.bridge import Bridge

    bridge = Bridge(plane)
    await bridge.start()
    try:
        yield {
            "bridge": bridge,
            "leases": {"listener": bridge.lease, "notifier": bridge.outbox.lease},
        }
    finally:
        await bridge.stop()
