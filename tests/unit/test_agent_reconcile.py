"""A whole agent, in process, on fakes (simulated runtime, artifacts and vehicle; a fake
cloud): converge, block, roll back, reject, converge offline, recover from interruption."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from muto.agent.config_file import load_config
from muto.agent.journal import events as ev
from muto.agent.runtime.simulated import SimulatedBehaviour
from muto.domain.desired import AgentConfig, Policy
from muto.domain.reasons import ReasonCode
from muto.domain.vehicle_state import VehicleState
from muto.trust import Signer
from tests.support.agent_rig import (
    MOVING,
    PARKED,
    VEHICLE,
    A,
    B,
    C,
    Rig,
    converged_on,
    failing,
    make_rig,
    restarted,
    run,
    started,
    types,
)


def test_converges_reports_once_and_then_does_nothing() -> None:
    async def scenario() -> None:
        rig = await started()
        await converged_on(rig, A, 1)
        assert rig.runtime.applied == [A.key]
        assert rig.cloud.reconcile_reports() == [("dsr_1", "converged", [])]
        report = rig.cloud.reports[0]
        assert report["running"]["name"] == "nav" and report["timings"]["applySec"] is not None
        before = rig.journal.state.position
        assert (await rig.reconcile()).kind == "converged"
        assert rig.journal.state.position == before  # a 304 and an empty plan: no event
        await rig.deliver()
        assert len(rig.cloud.reports) == 1

    run(scenario)


def test_blocked_reports_every_code_once_downloads_meanwhile_then_converges() -> None:
    async def scenario() -> None:
        rig = await started()
        await converged_on(rig, A, 1)
        rig.vehicle.state = VehicleState(speed_mps=3, autonomous_mode=True, free_disk_mb=1e5)
        rig.artifacts.missing = {B.artifacts[0].digest}
        rig.cloud.serve(rig.signers.bundle(B, 2))
        verdict = await rig.reconcile()
        assert (verdict.kind, list(verdict.codes)) == (
            "blocked",
            [ReasonCode.DENY_MOVING, ReasonCode.DENY_AUTONOMOUS_MODE],
        )
        assert not rig.artifacts.missing  # downloads continue while blocked
        assert rig.runtime.applied == [A.key]
        position = rig.journal.state.position
        for _ in range(3):  # the 30 s poll: no firehose
            assert (await rig.reconcile()).kind == "blocked"
        assert rig.journal.state.position == position
        rig.vehicle.state = PARKED
        assert (await rig.reconcile()).kind == "converged"
        await rig.deliver()
        assert rig.cloud.reconcile_reports() == [
            ("dsr_1", "converged", []),
            ("dsr_2", "blocked", ["DENY_MOVING", "DENY_AUTONOMOUS_MODE"]),
            ("dsr_2", "converged", []),
        ]

    run(scenario)


def test_a_failed_apply_rolls_back_and_is_not_retried_until_a_newer_revision() -> None:
    async def scenario() -> None:
        rig = await started(behaviours={B.key: failing(apply=True)})
        await converged_on(rig, A, 1)
        rig.cloud.serve(rig.signers.bundle(B, 2))
        await rig.reconcile()
        assert rig.runtime.status().release == A.key
        for _ in range(2):
            await rig.reconcile()
        assert rig.runtime.applied == [A.key]  # B never ran; A kept running
        await rig.deliver()
        assert rig.cloud.reconcile_reports()[1:] == [
            ("dsr_2", "rolled_back", ["APPLY_FAILED", "ROLLBACK_APPLIED"])
        ]
        rig.runtime.behaviours = {}
        rig.cloud.serve(rig.signers.bundle(B, 3))  # newer: asks for B explicitly
        assert (await rig.reconcile()).kind == "converged"
        assert rig.runtime.status().release == B.key

    run(scenario)


def test_readiness_timeout_and_crash_loop_during_readiness_roll_back() -> None:
    async def scenario() -> None:
        crash = SimulatedBehaviour(ready_after_sec=10, restart_every_sec=0.5)
        rig = await started(behaviours={B.key: failing(ready=False), C.key: crash})
        await converged_on(rig, A, 1)
        rig.cloud.serve(rig.signers.bundle(B, 2))
        await rig.reconcile()
        rig.cloud.serve(rig.signers.bundle(C, 3))
        await rig.reconcile()
        await rig.deliver()
        assert rig.cloud.reconcile_reports()[1:] == [
            ("dsr_2", "rolled_back", ["READINESS_TIMEOUT", "ROLLBACK_APPLIED"]),
            ("dsr_3", "rolled_back", ["CRASH_LOOP_DETECTED", "ROLLBACK_APPLIED"]),
        ]
        assert rig.runtime.status().release == A.key
        assert rig.journal.state.running_key == A.key

    run(scenario)


def test_a_crash_loop_after_converging_rolls_back_to_the_previous_known_good() -> None:
    async def scenario() -> None:
        rig = await started(behaviours={B.key: SimulatedBehaviour(restart_every_sec=1.0)})
        await converged_on(rig, A, 1)
        rig.runtime.time_scale = 1.0  # B restarts every second of the rig's clock
        await converged_on(rig, B, 2)
        rig.clock.advance(5)
        assert rig.agent.drifted()
        await rig.reconcile()
        await rig.deliver()
        assert rig.runtime.status().release == A.key
        assert rig.cloud.reconcile_reports()[-1] == (
            "dsr_2",
            "rolled_back",
            ["CRASH_LOOP_DETECTED", "ROLLBACK_APPLIED"],
        )
        assert "CrashLoopDetected" in types(rig)

    run(scenario)


def test_without_a_previous_known_good_the_runtime_is_stopped_and_the_vehicle_failed() -> None:
    async def scenario() -> None:
        rig = await started(behaviours={A.key: failing(ready=False)})
        rig.cloud.serve(rig.signers.bundle(A, 1))
        await rig.reconcile()
        await rig.deliver()
        assert rig.runtime.status().release is None
        assert rig.cloud.reconcile_reports() == [
            ("dsr_1", "failed", ["READINESS_TIMEOUT", "NO_PREVIOUS_KNOWN_GOOD"])
        ]

    run(scenario)


def test_verification_failures_are_rejected_once_and_leave_the_running_release() -> None:
    async def scenario() -> None:
        rig = await started()
        await converged_on(rig, A, 1)
        forged = rig.signers.bundle(B, 2, release_signer=Signer.generate())
        rig.cloud.serve(forged)
        assert (await rig.reconcile()).kind == "converged"  # still on A's revision
        await rig.reconcile()
        replayed = rig.signers.bundle(A, 1, revision="dsr_old", config=AgentConfig(heartbeat_s=9))
        rig.cloud.serve(replayed)  # an old sequence: a replay
        await rig.reconcile()
        rig.cloud.serve(rig.signers.bundle(B, 5, vehicle_id="someone-else"))
        await rig.reconcile()
        await rig.deliver()
        assert rig.runtime.applied == [A.key]
        # Each under the revision its signed document names, if for this vehicle (else
        # none); after one that is not news the desired revision's verdict is said again.
        assert rig.cloud.reconcile_reports()[1:] == [
            ("dsr_2", "rejected", ["VERIFY_SIGNATURE_FAILED"]),
            ("dsr_old", "rejected", ["STALE_REVISION"]),
            ("dsr_1", "converged", []),
            (None, "rejected", ["WRONG_VEHICLE"]),
            ("dsr_1", "converged", []),
        ]

    run(scenario)


def test_converges_offline_on_the_cached_state_and_reports_later_in_order() -> None:
    async def scenario() -> None:
        rig = await started()
        rig.vehicle.state = MOVING
        rig.cloud.serve(rig.signers.bundle(A, 1))
        assert (await rig.reconcile()).kind == "blocked"
        rig.cloud.online = False
        rig = await restarted(rig)  # an offline reboot, too
        rig.vehicle.state = PARKED
        assert (await rig.reconcile()).kind == "converged"
        assert rig.runtime.applied == [A.key]
        assert not await rig.deliver()
        rig.cloud.online = True
        assert await rig.deliver()
        assert rig.cloud.reconcile_reports() == [
            ("dsr_1", "blocked", ["DENY_MOVING"]),
            ("dsr_1", "converged", []),
        ]
        assert not rig.journal.state.outbox

    run(scenario)


def test_reconcile_reports_are_numbered_by_the_journal_not_the_clock() -> None:
    """Issue #14 item 18: each reconcile report carries its place in the journal (the
    journal's incarnation, its count of reconcile reports); the count survives restarts
    and clock jumps, and a new (wiped) journal starts over under a new incarnation."""

    async def scenario() -> None:
        rig = await started()
        rig.clock.at += timedelta(hours=6)  # the clock runs ahead...
        rig.vehicle.state = MOVING
        rig.cloud.serve(rig.signers.bundle(A, 1))
        assert (await rig.reconcile()).kind == "blocked"
        rig = await restarted(rig)
        rig.clock.at -= timedelta(hours=6)  # ...and comes back
        rig.vehicle.state = PARKED
        assert (await rig.reconcile()).kind == "converged"
        await rig.deliver()
        places = [r["journal"] for r in rig.cloud.reports if r["kind"] == "reconcile"]
        incarnation = rig.journal.state.incarnation
        assert incarnation is not None
        assert places == [
            {"incarnation": incarnation, "number": 1},
            {"incarnation": incarnation, "number": 2},
        ]
        wiped = make_rig(signers=rig.signers, cloud=rig.cloud, clock=rig.clock)
        await wiped.agent.start(loop=False)
        await converged_on(wiped, B, 2)
        fresh = rig.cloud.reports[-1]["journal"]
        assert fresh["number"] == 1 and fresh["incarnation"] not in (None, incarnation)

    run(scenario)


def test_health_reports_carry_the_journal_position_they_were_queued_at() -> None:
    """The cloud orders a vehicle's health reports by it (report_order.health_overtaken),
    so a late copy of an older one never flips the fleet view back."""

    async def scenario() -> None:
        rig = await started()
        await converged_on(rig, A, 1)
        for _ in range(3):  # delivered each: an undelivered one that says the same is replaced
            rig.agent.report_health(periodic=True)
            await rig.deliver()
        queued = {
            r.event.report_id: r.position
            for r in rig.journal.records()
            if isinstance(r.event, ev.ReportQueued) and r.event.kind == "health"
        }
        healths = [r for r in rig.cloud.reports if r["kind"] == "health"]
        assert len(healths) >= 3
        incarnation = rig.journal.state.incarnation
        assert [r["journal"] for r in healths] == [
            {"incarnation": incarnation, "number": queued[r["reportId"]]} for r in healths
        ]

    run(scenario)


def test_a_report_the_cloud_refuses_does_not_hold_up_the_others() -> None:
    async def scenario() -> None:
        rig = await started()
        rig.vehicle.state = MOVING
        rig.cloud.serve(rig.signers.bundle(A, 1))
        await rig.reconcile()
        first = next(iter(rig.journal.state.outbox))
        rig.cloud.refuse.add(first)
        rig.vehicle.state = PARKED
        await rig.reconcile()
        assert await rig.deliver()
        assert rig.cloud.reconcile_reports() == [("dsr_1", "converged", [])]
        assert "ReportDropped" in types(rig)

    run(scenario)


def test_an_interrupted_apply_resumes_and_the_third_interruption_gives_up() -> None:
    async def scenario() -> None:
        rig = await started()
        await converged_on(rig, A, 1)
        rig.cloud.serve(rig.signers.bundle(B, 2))
        rig.vehicle.state = MOVING
        await rig.reconcile()  # accepted, blocked

        def died_applying(r: Rig) -> None:  # what a SIGKILL mid-apply leaves behind
            at = r.clock.now()
            r.journal.append(
                ev.ApplyStarted(
                    at=at, release_key=B.key, revision="dsr_2", sequence=2, replacing=A.key
                )
            )

        died_applying(rig)
        rig = await restarted(rig)
        assert rig.journal.state.interruptions == {"2:apply": 1}
        rig.vehicle.state = PARKED
        died_applying(rig)
        rig = await restarted(rig)
        died_applying(rig)
        rig = await restarted(rig)
        assert rig.journal.state.interruptions == {"2:apply": 3}
        await rig.reconcile()
        await rig.deliver()
        assert rig.runtime.applied == [A.key]  # restored, B not tried again
        assert rig.cloud.reconcile_reports()[-1] == (
            "dsr_2",
            "rolled_back",
            ["RETRY_LIMIT_REACHED", "ROLLBACK_APPLIED"],
        )

    run(scenario)


def test_agent_config_is_applied_from_desired_state_and_stored_atomically(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        rig = make_rig()
        rig.agent.parts.config_file = tmp_path / "agent-config.json"
        await rig.agent.start(loop=False)
        config = AgentConfig(heartbeat_s=5, telemetry_enabled=False)
        rig.cloud.serve(rig.signers.bundle(A, 1, config=config))
        await rig.reconcile()
        assert rig.journal.state.config == config
        assert load_config(tmp_path / "agent-config.json") == config
        assert "ConfigApplied" in types(rig)
        rig.agent.report_health(periodic=True)  # telemetry off: nothing queued
        assert all(p.kind != "health" for p in rig.journal.state.outbox.values())

    run(scenario)


def test_health_reports_changes_and_an_offline_outbox_does_not_grow_with_time() -> None:
    async def scenario() -> None:
        rig = await started()
        await converged_on(rig, A, 1)
        rig.cloud.online = False
        for _ in range(5):
            rig.agent.report_health(periodic=True)
        healths = [p for p in rig.journal.state.outbox.values() if p.kind == "health"]
        assert [p.status for p in healths] == ["healthy"]
        await rig.runtime.stop()
        rig.agent.report_health()
        rig.agent.report_health()
        healths = [p for p in rig.journal.state.outbox.values() if p.kind == "health"]
        assert [p.status for p in healths] == ["healthy", "unhealthy"]

    run(scenario)


def test_drift_restores_the_running_release() -> None:
    async def scenario() -> None:
        rig = await started()
        await converged_on(rig, A, 1)
        await rig.runtime.stop()
        assert rig.agent.drifted()
        assert (await rig.reconcile()).kind == "converged"
        assert rig.runtime.applied == [A.key, A.key]
        assert "DriftDetected" in types(rig)

    run(scenario)


def test_a_gate_closing_mid_apply_does_not_cut_the_switch_short() -> None:
    async def scenario() -> None:
        slow = SimulatedBehaviour(apply_sec=0.05)
        rig = await started(behaviours={B.key: slow}, time_scale=1.0)
        await converged_on(rig, A, 1)
        rig.cloud.serve(rig.signers.bundle(B, 2, policy=Policy()))
        task = asyncio.create_task(rig.reconcile())
        await asyncio.sleep(0.01)
        rig.vehicle.state = MOVING
        assert (await task).kind == "converged"
        assert rig.runtime.status().release == B.key

    run(scenario)


def test_stopping_during_readiness_abandons_the_wait_without_counting_it() -> None:
    async def scenario() -> None:
        slow = SimulatedBehaviour(ready_after_sec=30)
        rig = await started(behaviours={B.key: slow}, time_scale=1.0)
        await converged_on(rig, A, 1)
        rig.cloud.serve(rig.signers.bundle(B, 2))
        rig.agent.trigger("test")
        pass_ = asyncio.create_task(rig.reconcile())
        while rig.agent.phase.value != "checking_readiness":
            await asyncio.sleep(0.001)
        pass_.cancel()
        await asyncio.gather(pass_, return_exceptions=True)
        assert types(rig)[-1] == "StepAbandoned"
        rig = await restarted(rig)
        assert rig.journal.state.interruptions == {}
        assert rig.journal.state.running_key == A.key

    run(scenario)


def test_the_loop_coalesces_triggers_and_stops_cleanly() -> None:
    async def scenario() -> None:
        rig = make_rig(poll_s=3600, drift_check_s=3600, health_every_s=3600)
        rig.cloud.serve(rig.signers.bundle(A, 1))
        await rig.agent.start()
        for reason in ("notify:1", "notify:1", "drift"):  # with "startup": one pass for all
            rig.agent.trigger(reason)
        while not (rig.agent.idle and rig.agent.passes and rig.agent.courier.delivered):
            await asyncio.sleep(0.001)
        await rig.agent.stop()
        # the journal-first pass (no fetch), then one pass for the four triggers
        assert (rig.agent.passes, rig.cloud.fetches) == (2, 1)
        assert rig.runtime.status().release is None
        assert rig.cloud.reconcile_reports() == [("dsr_1", "converged", [])]
        assert rig.cloud.reports[0]["vehicleId"] == VEHICLE

    run(scenario)


def test_every_step_kind_has_an_entry_in_the_executor_table() -> None:
    from muto.agent.reconcile.steps import Step

    executor = make_rig().agent._wired.reconciler.executor
    assert set(executor._table) == set(Step.__subclasses__())
