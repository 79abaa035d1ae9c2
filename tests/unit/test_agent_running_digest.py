"""After a rollback, what runs is reported with its manifest digest in every report,
health report and `agent/state` snapshot (issue #14 item 16): the rolled-back-to
release is not the desired one, so the digest must come from the journal."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from muto.agent.journal import Journal
from muto.agent.journal import events as ev
from muto.agent.journal.integrity import verify
from muto.agent.journal.journal import PAST_SNAPSHOT_TOPICS
from muto.agent.snapshots import agent_state
from muto.domain.messages import AgentPhase
from muto.domain.wire import to_builtins
from muto.trust.releases import manifest_digest
from tests.support.agent_rig import failing, make_rig, release

GOOD, BAD = release("1.0.0"), release("2.0.0")


def test_running_manifest_digest_is_filled_after_a_rollback() -> None:
    async def scenario() -> tuple[list[dict[str, Any]], dict[str, Any]]:
        rig = make_rig(behaviours={BAD.key: failing(apply=True)})
        await rig.agent.start(loop=False)
        rig.cloud.serve(rig.signers.bundle(GOOD, 1))
        await rig.reconcile()
        rig.cloud.serve(rig.signers.bundle(BAD, 2))
        await rig.reconcile()
        rig.agent.report_health(periodic=True)
        await rig.deliver()
        state = agent_state("car", rig.journal.state, AgentPhase.IDLE)
        await rig.agent.stop()
        return rig.cloud.reports, to_builtins(state)

    reports, state = asyncio.run(scenario())
    good = {"name": "nav", "version": "1.0.0", "manifestDigest": manifest_digest(GOOD)}
    rolled_back = [r for r in reports if r.get("status") == "rolled_back"]
    assert rolled_back and all(r["running"] == good for r in rolled_back)
    health = [r for r in reports if r["kind"] == "health"]
    assert health and health[-1]["running"] == good
    assert state["running"] == good
    assert all(r["running"]["manifestDigest"] for r in reports if r.get("running"))


def test_a_snapshot_of_the_previous_state_shape_is_replayed_over(tmp_path: Path) -> None:
    assert len(PAST_SNAPSHOT_TOPICS) == 5  # v1 to v5
    for old_topic in sorted(PAST_SNAPSHOT_TOPICS):
        data_dir = tmp_path / old_topic
        journal = Journal.open(data_dir)
        journal.append(ev.RuntimeStopped(at=datetime(2026, 1, 1, tzinfo=UTC), reason="x"))
        journal._store.put_snapshot(1, old_topic, b'{"position": 1}')
        journal.close()
        with Journal.open(data_dir) as again:
            assert again.state.position == 1 and again.replayed == 1
            assert verify(again).ok
