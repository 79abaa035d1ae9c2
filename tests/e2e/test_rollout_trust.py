"""Issue 13, "rollouts an operator can trust", with real agents (simulated runtime)
against the real cloud process and a real Mosquitto. Each scenario runs on SQLite or
PostgreSQL in `make test` (the two alternate) and on the other too under `make
test-faults`. Each failed before its rule (docs/rollouts.md) was in place."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from muto.sim.profile import Behaviour
from tests.faults.runs import cases
from tests.support.rollout_rig import GOOD, NEXT, WAIT_S, rig
from tests.support.waits import until

FINAL = ("completed", "aborted", "rolled_back")
WAVE_DEADLINE_S = 12  # the wave converges (but one) in a few seconds: ample


@pytest.mark.parametrize("backend", cases(["sqlite"], ["postgres"]))
def test_a_failed_wave_rolls_back_the_canaries_too(tmp_path: Path, backend: str) -> None:
    """Items 1 and 6: one crash-looping wave member rolls back every vehicle the
    rollout changed, canaries included; the decision and the rollback carry
    WAVE_GATE_FAILED; the progress counts every vehicle rolled back."""

    async def scenario() -> None:
        async with rig(tmp_path, backend) as r:
            crashing = r.ids[-1]  # a wave member (the canaries are the lowest ids)
            r.misbehave(crashing, NEXT, Behaviour(crash_loop=True))
            await r.start("next", "1.1.0", bakeSec=5)

            done = await r.until("next", lambda s: s["state"] in FINAL)
            assert done["state"] == "rolled_back", done
            assert crashing not in [
                v["vehicleId"] for v in done["vehicles"] if v["phase"] == "canary"
            ]
            assert set((await r.desired()).values()) == {GOOD}  # the canaries too
            assert sum(p["rolledBack"] + p["rollingBack"] for p in done["phases"].values()) == len(
                r.ids
            )
            decision = done["decisions"][-1]
            assert (decision["event"], decision["reasonCode"]) == (
                "WaveGateFailed",
                "WAVE_GATE_FAILED",
            )
            assert "CRASH_LOOP_DETECTED" in decision["evaluation"]["reasonCodes"]
            await r.running_everywhere(GOOD)

    asyncio.run(scenario())


@pytest.mark.parametrize("backend", cases(["postgres"], ["sqlite"]))
def test_a_crash_loop_after_the_wave_gate_passed_still_rolls_back(
    tmp_path: Path, backend: str
) -> None:
    """Item 2: the wave gate passes on the others (3 of 4 >= 75 %) before a slow member
    (4 s apply) reports its crash loop; the bake still watches, so the rollout ends
    rolled back (BAKE_FAILED), never completed with a crash loop inside."""

    async def scenario() -> None:
        async with rig(tmp_path, backend) as r:
            slow = r.ids[-1]
            r.misbehave(slow, NEXT, Behaviour(crash_loop=True, apply_sec=4))
            await r.start("next", "1.1.0", convergedPct=75, bakeSec=60)

            baking = await r.until(
                "next", lambda s: s["state"] != "wave" and s["state"] != "canary"
            )
            assert baking["state"] == "baking", baking  # the gate passed before the report
            done = await r.until("next", lambda s: s["state"] in FINAL)
            assert done["state"] == "rolled_back", done
            assert [d["reasonCode"] for d in done["decisions"]] == [
                "CANARY_GATE_PASSED",
                "WAVE_GATE_PASSED",
                "BAKE_FAILED",
            ]
            assert done["decisions"][-1]["evaluation"]["trippedBy"] == {"CRASH_LOOP_DETECTED": 1}
            assert set((await r.desired()).values()) == {GOOD}

    asyncio.run(scenario())


@pytest.mark.parametrize("backend", cases(["sqlite"], ["postgres"]))
def test_a_deferred_vehicle_never_rolls_back_the_converged_ones(
    tmp_path: Path, backend: str
) -> None:
    """Item 3: a moving wave member is deferred (DENY_MOVING) past the wave deadline; the
    converged ones pass the gate without it, the rollout completes, and the deferred
    vehicle keeps its desired state and applies when its gate opens."""

    async def scenario() -> None:
        async with rig(tmp_path, backend) as r:
            moving = r.ids[-1]
            r.fleet.set_state(moving, speed_mps=5.0)
            await r.start("next", "1.1.0", waveDeadlineSec=8, bakeSec=2)

            done = await r.until("next", lambda s: s["state"] in FINAL)
            assert done["state"] == "completed", done
            wave_gate = done["decisions"][1]
            assert wave_gate["reasonCode"] == "WAVE_GATE_PASSED"
            assert wave_gate["evaluation"]["deferredBy"] == {"DENY_MOVING": 1}
            assert wave_gate["evaluation"]["counted"] == wave_gate["evaluation"]["targeted"] - 1
            running = await r.running()
            assert running[moving] == GOOD
            assert {v for k, v in running.items() if k != moving} == {NEXT}
            assert (await r.desired())[moving] == NEXT  # it keeps its desired state

            r.fleet.set_state(moving, speed_mps=0.0)  # its gate opens

            async def applied() -> bool:
                return (await r.running())[moving] == NEXT

            await until(applied, f"{NEXT} applied on {moving}", WAIT_S, interval=0.3)

    asyncio.run(scenario())


@pytest.mark.parametrize("backend", cases(["postgres"], ["sqlite"]))
def test_a_stuck_rollout_says_why_and_pausing_stops_its_clock(tmp_path: Path, backend: str) -> None:
    """Items 5 and 7: a wave waiting on a vehicle whose agent went away shows the phase
    deadline and the vehicle outstanding with its presence and last report, in GET
    /rollouts/{id} and in `muto audit explain --rollout`. Time paused does not count
    toward the deadline; a rollout rolled back while paused is not paused, and pause or
    resume then answer 409 rollout_final."""

    async def scenario() -> None:
        async with rig(tmp_path, backend) as r:
            gone = r.ids[-1]
            agent = r.fleet.vehicles[gone].agent
            assert agent is not None
            await agent.stop()  # the vehicle goes away before the rollout
            await r.start("next", "1.1.0", waveDeadlineSec=WAVE_DEADLINE_S)
            stuck = await r.until(
                "next",
                lambda s: (
                    s["state"] == "wave" and s["phases"]["wave"]["converged"] == len(r.ids) - 3
                ),
            )
            assert stuck["deadline"] is not None
            assert [o["vehicleId"] for o in stuck["outstanding"]] == [gone]
            outstanding = stuck["outstanding"][0]
            assert outstanding["status"] == "assigned"
            assert outstanding["presence"] == "offline"
            assert outstanding["lastStatus"] == "converged"  # on 1.0.0, before it went away
            assert outstanding["lastReportAt"] is not None
            # Paused from here until past the wave's deadline (the audit runs meanwhile),
            # while the controller passes over it: the deadline clock stands still.
            asked_pause = time.monotonic()
            paused = await r.operator.http.post("/rollouts/next/pause")
            assert paused.status_code == 200, paused.text
            pause_answered = time.monotonic()

            explained = subprocess.run(
                [
                    *(sys.executable, "-m", "muto.cli", "audit", "explain", "--rollout", "next"),
                    *("--data-dir", str(r.cloud.data_dir)),
                    *(["--database-url", r.database_url] if r.database_url else []),
                ],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert explained.returncode == 0, explained.stderr
            standing = explained.stdout.partition("\n\n")[2]
            rows = dict(line.split(None, 1) for line in standing.splitlines() if line[:1] != " ")
            assert rows["state"] == "wave (paused: the deadline clock stands still)"
            # While paused there is no deadline, only what the phase has left: the API's.
            left = (await r.operator.http.get("/rollouts/next")).json()["data"]
            assert left["deadline"] is None and left["deadlineRemainingS"] > 0
            said = re.fullmatch(
                r"none while paused \(([\d.]+) s left of the phase\)", rows["deadline"]
            )
            assert said is not None, rows["deadline"]
            assert float(said[1]) == pytest.approx(left["deadlineRemainingS"], abs=0.01)
            assert rows["outstanding"] == "1 vehicle(s)"
            assert f"{gone} assigned, offline since" in standing

            deadline = datetime.fromisoformat(stuck["deadline"])
            await asyncio.sleep(max(0.0, (deadline - datetime.now(UTC)).total_seconds()))
            await r.ticks_pass(2)  # whole passes past the old deadline decide nothing
            asked_resume = time.monotonic()
            resumed = await r.operator.http.post("/rollouts/next/resume")
            resume_answered = time.monotonic()
            assert resumed.status_code == 200, resumed.text
            assert resumed.json()["data"]["state"] == "wave"  # past the old deadline
            pushed = datetime.fromisoformat(resumed.json()["data"]["deadline"])
            held = (pushed - deadline).total_seconds()
            # Pushed by exactly the time paused, as far as this side can tell it.
            assert asked_resume - pause_answered <= held <= resume_answered - asked_pause
            assert pushed > datetime.now(UTC)

            await r.operator.http.post("/rollouts/next/pause")
            back = await r.operator.http.post("/rollouts/next/rollback")
            assert back.json()["data"]["state"] == "rolled_back"
            assert back.json()["data"]["paused"] is False
            for action in ("pause", "resume"):
                answer = await r.operator.http.post(f"/rollouts/next/{action}")
                assert answer.status_code == 409
                assert answer.json()["error"]["code"] == "rollout_final"

    asyncio.run(scenario())


@pytest.mark.parametrize("backend", cases(["sqlite"], ["postgres"]))
def test_membership_is_fixed_at_start_and_a_relabelled_vehicle_leaves(
    tmp_path: Path, backend: str
) -> None:
    """Item 8: a wave member relabelled out of the selector before its wave is not given
    the release (it leaves the rollout); a vehicle registered into the selector during
    the rollout is not added, and the view counts it as matching but not in the
    rollout."""

    async def scenario() -> None:
        async with rig(tmp_path, backend) as r:
            relabelled = r.ids[-1]
            await r.start("next", "1.1.0", bakeSec=2)
            await r.operator.http.post("/rollouts/next/pause")  # hold the canary phase
            await r.operator.label(relabelled, {"fleet": "elsewhere"})
            registered = await r.operator.http.post(
                "/vehicles",
                json={
                    "vehicleId": "late-1",
                    "labels": {"fleet": "demo", "model": "vehicle-v3", "region": "eu-west"},
                    "attributes": {"os": "ubuntu-22.04", "rosDistro": "humble"},
                },
            )
            assert registered.status_code == 201, registered.text
            await r.operator.http.post("/rollouts/next/resume")

            done = await r.until("next", lambda s: s["state"] in FINAL)
            assert done["state"] == "completed", done
            members = {v["vehicleId"]: v["status"] for v in done["vehicles"]}
            assert members[relabelled] == "left"
            assert "late-1" not in members
            assert done["notInRollout"] == 1  # late-1 matches and is not a member
            assert done["phases"]["wave"]["left"] == 1
            running = await r.running()  # fleet=demo: the members that stayed, and late-1
            assert running.pop("late-1") is None
            assert set(running.values()) == {NEXT}
            outside = await r.vehicle(relabelled)
            assert (outside["desiredRelease"], outside["runningRelease"]) == (GOOD, GOOD)

    asyncio.run(scenario())


@pytest.mark.parametrize("backend", cases(["postgres"], ["sqlite"]))
def test_rolling_back_a_first_release_leaves_no_vehicle_on_it(tmp_path: Path, backend: str) -> None:
    """Item 4: a fleet that ran nothing before the rollout is rolled back to running
    nothing: every vehicle the rollout changed gets a new revision that says "run
    nothing" and counts as rolled back; the online ones stop the release and report
    converged to it; a vehicle away from the cloud during the rollback installs the
    "run nothing" revision when it returns, never the release."""

    async def scenario() -> None:
        async with rig(tmp_path, backend, running=None) as r:
            away = r.ids[-1]  # a wave member (the canaries are the lowest ids)
            r.fleet.cut([away])  # its fetches fail: it never gets the release
            await r.start("next", "1.1.0")
            await r.until(
                "next",
                lambda s: (
                    s["state"] == "wave" and s["phases"]["wave"]["converged"] == len(r.ids) - 3
                ),
            )
            running = await r.running()
            assert running.pop(away) is None
            assert set(running.values()) == {NEXT}

            back = await r.operator.http.post("/rollouts/next/rollback")
            assert back.status_code == 200, back.text
            done = await r.rollout("next")
            assert done["state"] == "rolled_back"
            assert sum(p["rolledBack"] + p["rollingBack"] for p in done["phases"].values()) == len(
                r.ids
            )
            vehicles = await r.vehicles()
            assert {v["desiredRelease"] for v in vehicles.values()} == {None}
            told = {v["desiredRevision"] for v in vehicles.values()}
            assert len(told) == 1  # one "run nothing" revision for the whole fleet

            found: dict[str, dict[str, Any]] = {}

            async def stopped(ids: list[str]) -> bool:
                nonlocal found
                found = await r.vehicles()
                return all(
                    (found[v]["runningRelease"], found[v]["lastStatus"]) == (None, "converged")
                    for v in ids
                )

            await until(
                lambda: stopped([v for v in r.ids if v != away]), lambda: f"stopped: {found}"
            )
            r.fleet.restore([away])
            await until(lambda: stopped([away]), lambda: f"stopped: {found}")
            agent = r.fleet.vehicles[away].agent
            assert agent is not None
            state = agent.journal.state
            assert state.desired is not None and state.desired.release is None
            assert state.desired.revision in told
            assert NEXT not in state.releases and NEXT not in state.known_good
            assert agent.parts.runtime.status().release is None

    asyncio.run(scenario())
