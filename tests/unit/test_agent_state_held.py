"""`agent/state` shows a desired state held for want of trusted time (`held`,
`muto.agent-state.v2`, spec/mqtt-topics.md): the retained snapshot the MQTT link
publishes said nothing of it, only the reconcile report did."""

from __future__ import annotations

from typing import Any

import msgspec

from muto.agent.parts import AgentView
from muto.domain.messages import AgentState, Leaf
from muto.domain.wire import decode, encode
from tests.support.agent_rig import A, B, Rig, converged_on, run, started


def state_of(rig: Rig) -> dict[str, Any]:
    """The `agent/state` payload as the MQTT link would publish it, checked against the
    Struct the spec's schema is generated from."""
    view = AgentView(rig.agent.settings, rig.agent.parts, rig.agent.signals)
    data = encode(view.snapshots()[Leaf.AGENT_STATE])
    decode(data, AgentState)
    result: dict[str, Any] = msgspec.json.decode(data)
    return result


def test_agent_state_shows_the_held_document_until_it_is_accepted() -> None:
    async def scenario() -> None:
        rig = await started()
        await converged_on(rig, A, 1)
        assert state_of(rig)["held"] is None
        rig.vehicle.set(clock_trusted=False)
        rig.cloud.serve(rig.signers.bundle(B, 2))
        await rig.reconcile()
        state = state_of(rig)
        assert state["schema"] == "muto.agent-state.v2"
        assert state["held"] == {
            "revision": "dsr_2",
            "sequence": 2,
            "reasonCodes": ["UNTRUSTED_CLOCK"],
        }
        # What is in force has not changed: the accepted revision and its outcome.
        assert (state["revision"], state["sequence"], state["lastStatus"]) == (
            "dsr_1",
            1,
            "converged",
        )
        assert state["running"]["version"] == A.version

        rig.vehicle.set(clock_trusted=True)
        assert (await rig.reconcile()).kind == "converged"
        state = state_of(rig)
        assert state["held"] is None
        assert (state["revision"], state["lastStatus"]) == ("dsr_2", "converged")

    run(scenario)
