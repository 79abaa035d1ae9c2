"""`muto demo`: the cloud, an MQTT broker and a simulated fleet of real agents on
loopback, through four stories (the fourth with the `ros` extra), each checked:

1. release 1.0.0 rolls out (one canary per region-model, then the wave); one vehicle is
   outside its apply window and is deferred (DENY_OUTSIDE_WINDOW) until it opens;
2. release 1.1.0 crash-loops on its canaries: they roll back (CRASH_LOOP_DETECTED,
   ROLLBACK_APPLIED), the rollout aborts, the wave never gets it;
3. some vehicles, blocked while moving, lose their cloud link; they converge to the
   new desired state from their cache and deliver their reports when they return;
4. with the `ros` extra installed, one more vehicle runs a real ROS 2 stack (ros_story.py).

The summary is checked last against what every agent's journal says it runs and last
reported: the fleet view must not tell another story than the vehicles.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from muto.agent.journal import JournalState
from muto.domain.release import (
    Artifact,
    ArtifactType,
    Compatibility,
    HealthModel,
    StackRelease,
)
from muto.sim.console import Console, counts, phase_detail, reason_counts
from muto.sim.fleet import SimFleet, SimVehicle
from muto.sim.operator import OperatorClient
from muto.sim.profile import Behaviour, SimProfile, vehicle_ids
from muto.sim.ros_story import ros_vehicle_story
from muto.sim.services import CloudProcess, make_broker, prepare_cloud
from muto.trust import sign_release

STACK = "autonomy-core"
WAIT_S = 45.0


@dataclass
class Expectations:
    held: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def check(self, ok: bool, what: str, console: Console) -> None:
        (self.held if ok else self.failed).append(what)
        console.say(f"  {'✔' if ok else '✘'} {what}")


def release(version: str) -> StackRelease:
    blob = f"{STACK}-{version}".encode()
    return StackRelease(
        stack_name=STACK,
        version=version,
        artifacts=[
            Artifact(
                type=ArtifactType.FILE,
                ref=f"{STACK}-{version}.tar.gz",
                digest="sha256:" + hashlib.sha256(blob).hexdigest(),
                size=len(blob),
            )
        ],
        compatibility=Compatibility(os=["ubuntu-22.04"], ros_distro=["humble"]),
        health_model=HealthModel(readiness_timeout_sec=20),
    )


def disagreements(view: list[dict[str, Any]], journals: dict[str, JournalState]) -> list[str]:
    """Where the fleet view differs from the vehicles' own journals: the release running
    and the status of the last reconcile report (once every report is delivered)."""
    shown = {v["vehicleId"]: v for v in view}
    found = []
    for vehicle_id, state in sorted(journals.items()):
        last = next(reversed(state.reported.values()), None)
        truth = (state.running_key, str(last.status) if last else None)
        row = shown.get(vehicle_id, {})
        told = (row.get("runningRelease"), row.get("lastStatus"))
        if state.outbox or truth != told:
            undelivered = f", {len(state.outbox)} report(s) undelivered" if state.outbox else ""
            found.append(f"{vehicle_id}: view {told}, journal {truth}{undelivered}")
    return found


def window_around_now() -> dict[str, str]:
    """An apply window open now in UTC (where the fleet is), closed six hours east."""
    now = datetime.now(UTC)
    start, end = now - timedelta(hours=1), now + timedelta(hours=3)
    return {"startLocal": start.strftime("%H:%M"), "endLocal": end.strftime("%H:%M")}


async def wait_until(check: Callable[[], Awaitable[bool]], timeout_s: float = WAIT_S) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.3)
    return False


class Demo:
    def __init__(
        self,
        data_dir: Path,
        vehicles: int,
        console: Console,
        broker: str = "auto",
        keep: bool = False,
    ) -> None:
        self.data_dir = data_dir
        self.keep = keep  # leave the cloud, broker and fleet running for the dashboard
        self.broker_kind = broker
        self.count = vehicles
        self.console = console
        self.expect = Expectations()
        self.profile = SimProfile(
            releases={f"{STACK}@1.1.0": Behaviour(crash_loop=True)}, poll_s=2.0, health_every_s=30.0
        )

    # -- set-up -------------------------------------------------------------------------

    async def run(self) -> int:
        say = self.console.say
        say(f"muto demo: {self.count} vehicles, data in {self.data_dir}")
        token, trust, signer, release_pub = prepare_cloud(self.data_dir)
        broker = make_broker(self.data_dir, self.broker_kind)
        await broker.start()
        cloud = CloudProcess(self.data_dir / "cloud", broker.url, release_pub)
        fleet: SimFleet | None = None
        operator = OperatorClient("http://127.0.0.1", token)
        try:
            await cloud.start()
            operator = OperatorClient(cloud.url, token)
            say(f"  cloud {cloud.url} · broker {broker.url} ({type(broker).__name__})")
            say(f"  dashboard {cloud.url}/ui/ (sign in with the operator token {token})")
            for version in ("1.0.0", "1.1.0", "1.2.0"):
                await operator.register_release(sign_release(release(version), [signer]))
            fleet = SimFleet(
                cloud.url, trust, self.profile, mqtt_url=broker.url, operator_token=token
            )
            await fleet.provision(
                SimVehicle(v, region, model)
                for v, region, model in vehicle_ids(self.profile, self.count)
            )
            await fleet.start(journal_root=self.data_dir / "vehicles")
            say(f"  {len(fleet.vehicles)} agents running (simulated runtime and vehicles)")
            await self.good_release(operator, fleet)
            await self.bad_release(operator, fleet)
            await self.offline(operator, fleet)
            await self.summary(operator, fleet, cloud.url)
            say("\n4. A vehicle with a real ROS 2 stack")
            await ros_vehicle_story(
                self.data_dir, cloud.url, broker.url, operator, signer, trust,
                lambda ok, what: self.expect.check(ok, what, self.console), say,
            )  # fmt: skip
            if self.keep:
                await self.stay_browsable(cloud.url, token)
        finally:
            if fleet is not None:
                await fleet.stop()
            await operator.aclose()
            await cloud.stop()
            await broker.stop()
        if self.expect.failed:
            say(f"\n{len(self.expect.failed)} expectation(s) did not hold:")
            for what in self.expect.failed:
                say(f"  ✘ {what}")
            return 1
        say(f"\nall {len(self.expect.held)} expectations held")
        return 0

    # -- the stories --------------------------------------------------------------------

    async def follow(
        self,
        operator: OperatorClient,
        rollout_id: str,
        done: Callable[[dict[str, Any]], bool],
        label: str,
    ) -> dict[str, Any]:
        latest: dict[str, Any] = {}

        async def check() -> bool:
            nonlocal latest
            latest = await operator.rollout(rollout_id)
            converged, targeted, detail = phase_detail(latest)
            self.console.progress(label, converged, targeted, detail)
            return done(latest)

        await wait_until(check)
        self.console.say()
        return latest

    async def good_release(self, operator: OperatorClient, fleet: SimFleet) -> None:
        say = self.console.say
        say("\n1. Release 1.0.0: canary per region-model, then the wave")
        late = max(fleet.vehicles)  # the highest id of its group: never a canary
        fleet.vehicles[late].clock.shift = timedelta(hours=6)
        say(f"  {late}'s local time is six hours past the apply window")
        rollout = await operator.start_rollout(
            {
                "selector": "fleet=demo",
                "stack": STACK,
                "version": "1.0.0",
                "policy": {"applyWindow": window_around_now()},
                "rolloutId": "demo-1.0.0",
                "thresholds": {"bakeSec": 5},  # watched 5 s after the wave gate passes
            }
        )
        canaries = [v["vehicleId"] for v in rollout["vehicles"] if v["phase"] == "canary"]
        say(f"  canaries: {', '.join(canaries)}")

        def all_but_late(r: dict[str, Any]) -> bool:
            wave = r["phases"].get("wave", {})
            return (
                bool(wave)
                and wave["converged"] == wave["targeted"] - 1
                and wave["deferredBy"].get("DENY_OUTSIDE_WINDOW") == 1
            )

        r = await self.follow(operator, "demo-1.0.0", all_but_late, "rollout")
        self.expect.check(
            all_but_late(r),
            f"{late} deferred (DENY_OUTSIDE_WINDOW) while the rest of the wave converged",
            self.console,
        )
        say(f"  {late}'s window opens")
        fleet.vehicles[late].clock.shift = timedelta()
        fleet.nudge(late)
        r = await self.follow(
            operator, "demo-1.0.0", lambda r: r["state"] == "completed", "rollout"
        )
        self.expect.check(
            r["state"] == "completed",
            "rollout of 1.0.0 completed once the window opened",
            self.console,
        )

    async def bad_release(self, operator: OperatorClient, fleet: SimFleet) -> None:
        self.console.say("\n2. Release 1.1.0 crash-loops on its canaries")
        await operator.start_rollout(
            {
                "selector": "fleet=demo",
                "stack": STACK,
                "version": "1.1.0",
                "rolloutId": "demo-1.1.0",
            }
        )
        # Aborted, and every canary confirmed its rollback (`rolling_back` until then).
        r = await self.follow(
            operator,
            "demo-1.1.0",
            lambda r: r["state"] == "aborted" and not r["phases"]["canary"]["rollingBack"],
            "rollout",
        )
        canary = r["phases"]["canary"]
        self.expect.check(
            r["state"] == "aborted" and canary["rolledBack"] == canary["targeted"],
            "canary gate failed: rollout aborted, every canary rolled back",
            self.console,
        )
        last = r["decisions"][-1]["evaluation"]["reasonCodes"] if r["decisions"] else []
        self.expect.check(
            "CRASH_LOOP_DETECTED" in last,
            "the gate decision names CRASH_LOOP_DETECTED",
            self.console,
        )
        vehicles = await operator.vehicles("fleet=demo")
        wave = {v["vehicleId"] for v in r["vehicles"] if v["phase"] == "wave"}
        self.expect.check(
            all(
                v["desiredRelease"] == f"{STACK}@1.0.0" for v in vehicles if v["vehicleId"] in wave
            ),
            "the wave was never assigned 1.1.0",
            self.console,
        )

        async def canaries_back() -> bool:
            found = {v["vehicleId"]: v for v in await operator.vehicles("fleet=demo")}
            return all(
                found[c]["runningRelease"] == f"{STACK}@1.0.0"
                and found[c]["lastStatus"] == "converged"
                for c in r["vehicles"]
                if c["phase"] == "canary"
                for c in [c["vehicleId"]]
            )

        self.expect.check(
            await wait_until(canaries_back),
            "canaries run 1.0.0 again (ROLLBACK_APPLIED, then the rollback revision converged)",
            self.console,
        )

    async def offline(self, operator: OperatorClient, fleet: SimFleet) -> None:
        say = self.console.say
        say("\n3. Offline: blocked vehicles lose the cloud and converge from their cache")
        ids = sorted(fleet.vehicles)
        tunnel = ids[len(ids) // 2 : len(ids) // 2 + max(2, len(ids) // 10)]
        for vehicle_id in tunnel:
            await operator.label(vehicle_id, {"group": "tunnel"})
            fleet.set_state(vehicle_id, speed_mps=12.0)
        assigned = await operator.assign(
            {"target": {"selector": "group=tunnel"}, "stack": {"name": STACK, "version": "1.2.0"}}
        )
        revision = assigned["desiredStateRevision"]

        async def blocked() -> bool:
            found = await operator.vehicles("group=tunnel")
            return all(
                v["lastStatus"] == "blocked"
                and "DENY_MOVING" in v["lastReasonCodes"]
                and v["desiredRevision"] == revision
                for v in found
            )

        self.expect.check(
            await wait_until(blocked),
            f"{len(tunnel)} moving vehicles fetched 1.2.0 and report blocked (DENY_MOVING)",
            self.console,
        )
        fleet.cut(tunnel)
        say(f"  link cut for {', '.join(tunnel)}; they stop")
        for vehicle_id in tunnel:
            fleet.set_state(vehicle_id, speed_mps=0.0)

        async def converged_offline() -> bool:
            agents = [fleet.vehicles[v].agent for v in tunnel]
            return all(
                a is not None and a.parts.runtime.status().release == f"{STACK}@1.2.0"
                for a in agents
            )

        ok = await wait_until(converged_offline)
        cloud_view = await operator.vehicles("group=tunnel")
        self.expect.check(
            ok and all(v["lastStatus"] == "blocked" for v in cloud_view),
            "they converged to 1.2.0 offline; the cloud has not heard yet",
            self.console,
        )
        fleet.restore(tunnel)
        say("  link restored")

        async def delivered() -> bool:
            found = await operator.vehicles("group=tunnel")
            return all(
                v["lastStatus"] == "converged" and v["runningRelease"] == f"{STACK}@1.2.0"
                for v in found
            )

        self.expect.check(
            await wait_until(delivered),
            "their queued reports arrived: the cloud shows them converged",
            self.console,
        )
        reports = [
            e["data"]["report"]
            for e in await operator.audit(tunnel[0])
            if e["eventType"] == "Vehicle.ReconcileReported"
            and e["data"]["report"].get("desiredStateRevision") == revision
        ]
        story = [r["status"] for r in reports]
        ids = [r["reportId"] for r in reports]
        self.expect.check(
            story[-2:] == ["blocked", "converged"] and len(ids) == len(set(ids)),
            f"{tunnel[0]}'s reports arrived once each, in order: {' -> '.join(story)}",
            self.console,
        )

    async def view_tells_the_truth(self, operator: OperatorClient, fleet: SimFleet) -> None:
        """The summary above is the fleet view: check it against each agent's journal."""
        journals = {
            v: sim.agent.journal.state for v, sim in fleet.vehicles.items() if sim.agent is not None
        }
        found: list[str] = []

        async def agree() -> bool:
            nonlocal found
            found = disagreements(await operator.vehicles(), journals)
            return not found

        ok = await wait_until(agree)
        for line in found[:10]:
            self.console.say(f"    {line}")
        self.expect.check(
            ok,
            f"the summary matches what all {len(journals)} agents' journals say they run "
            "and last reported",
            self.console,
        )

    async def summary(self, operator: OperatorClient, fleet: SimFleet, cloud_url: str) -> None:
        vehicles = await operator.vehicles()
        say = self.console.say
        say("\nSummary")
        self.console.table("vehicles per running release", counts(vehicles, "runningRelease"))
        self.console.table("vehicles per last status", counts(vehicles, "lastStatus"))
        self.console.table("last reason codes", reason_counts(vehicles))
        await self.view_tells_the_truth(operator, fleet)
        one = sorted(v["vehicleId"] for v in vehicles)[0]
        say("\nDig further (the demo's data stays in place):")
        say(f"  muto audit explain --vehicle {one} --data-dir {self.data_dir / 'cloud'}")
        say(f"  muto audit explain --rollout demo-1.1.0 --data-dir {self.data_dir / 'cloud'}")
        say(f"  muto agent journal list --data-dir {self.data_dir / 'vehicles' / one}")
        say(
            f"  the API was at {cloud_url} (start it again: muto cloud serve --data-dir "
            f"{self.data_dir / 'cloud'})"
        )

    async def stay_browsable(self, cloud_url: str, token: str) -> None:
        """`--keep`: everything keeps running until Ctrl-C (or SIGTERM)."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        self.console.say(
            f"\nkept running: browse {cloud_url}/ui/ (operator token {token}); Ctrl-C stops"
        )
        await stop.wait()


def main(args: argparse.Namespace) -> int:
    # The story is on stdout. Agents apply the logLevel of their desired state to their
    # logger, so the threshold sits on the handler.
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    data_dir = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="muto-demo-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    demo = Demo(data_dir, args.vehicles, Console(), args.broker, keep=args.keep)
    return asyncio.run(demo.run())


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="the whole system on loopback, with a simulated fleet")
    p.add_argument("--vehicles", type=int, default=50)
    p.add_argument("--data-dir", default=None, help="default: a new temporary directory")
    p.add_argument(
        "--broker",
        choices=["auto", "mosquitto", "embedded"],
        default="auto",
        help="auto: mosquitto if installed, else an embedded amqtt broker",
    )
    p.add_argument(
        "--keep", action="store_true", help="keep the fleet and dashboard running until Ctrl-C"
    )
    p.set_defaults(func=main)
