"""Every PostgreSQL advisory lock muto takes has its own key: the leader locks are held
for a process's lifetime, so a shared key blocks the other holder for ever (POST
/rollouts hung on PostgreSQL with MQTT on while the notifier held its key)."""

from __future__ import annotations

from muto.cloud.api.exclusive import KEYS
from muto.cloud.controller import CONTROLLER_LOCK_KEY
from muto.cloud.mqtt.outbox import NOTIFIER_LOCK_KEY
from muto.projections.store import PROJECTOR_LOCK_KEY


def test_every_advisory_lock_has_its_own_key() -> None:
    keys = [PROJECTOR_LOCK_KEY, CONTROLLER_LOCK_KEY, NOTIFIER_LOCK_KEY, *KEYS.values()]
    assert len(set(keys)) == len(keys), keys
