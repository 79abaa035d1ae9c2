"""`muto sim fleet`: N real agents over K processes against any cloud, until stopped.

Each process provisions and runs its own slice (vehicle i goes to process i mod K), so
tokens never cross process boundaries; the parent only starts, watches and stops them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from muto.domain.wire import decode
from muto.projections.collector import settle_collector
from muto.sim.fleet import SimFleet, SimVehicle
from muto.sim.profile import load_profile, vehicle_ids
from muto.trust import TrustConfig

logger = logging.getLogger("muto.sim")


def _slice(text: str) -> tuple[int, int]:
    index, _, total = text.partition("/")
    if not (index.isdigit() and total.isdigit() and int(index) < int(total)):
        raise argparse.ArgumentTypeError(f"--slice wants I/K with I < K, got {text!r}")
    return int(index), int(total)


async def run_slice(args: argparse.Namespace) -> int:
    profile = load_profile(Path(args.profile) if args.profile else None)
    if args.poll_s:
        profile = profile.__class__(
            **{**{f: getattr(profile, f) for f in profile.__struct_fields__}, "poll_s": args.poll_s}
        )
    trust = decode(Path(args.trust).read_bytes(), TrustConfig)
    index, total = args.slice
    mine = [
        SimVehicle(v, r, m)
        for n, (v, r, m) in enumerate(vehicle_ids(profile, args.vehicles))
        if n % total == index
    ]
    fleet = SimFleet(
        args.cloud_url, trust, profile, mqtt_url=args.mqtt_url, operator_token=args.operator_token
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def bring_up() -> None:
        await fleet.provision(mine)
        await fleet.start(stagger_s=args.stagger_s)
        up = await fleet.connected()
        settle_collector()  # the agents are up: freeze them
        print(
            f"slice {index}/{total}: {len(mine)} agents running, {up} connected to MQTT", flush=True
        )
        await asyncio.Future()  # runs until stopped

    # A stop during provisioning or start-up ends them too (10,000 vehicles take minutes
    # to provision, and a stopped benchmark must not leave slices behind).
    running = asyncio.create_task(bring_up())
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (running, stopping):
            task.cancel()
        await asyncio.gather(stopping, return_exceptions=True)
        try:
            await running  # a failed start-up is this slice's error
        except asyncio.CancelledError:
            pass
        finally:
            await fleet.stop()
    return 0


def fleet(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.slice is not None:
        settle_collector()
        return asyncio.run(run_slice(args))
    children = []
    for index in range(args.processes):
        argv = [
            sys.executable,
            "-m",
            "muto.cli",
            *sys.argv[1:],
            "--slice",
            f"{index}/{args.processes}",
        ]
        children.append(subprocess.Popen(argv))

    def forward(signum: int, _: Any) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [child.wait() for child in children]
    return max(codes, default=0)


def register(sub: Any) -> None:
    sim = sub.add_parser("sim", help="the fleet simulator")
    actions = sim.add_subparsers(dest="action", required=True)
    p = actions.add_parser("fleet", help="run N simulated vehicles with real agents")
    p.add_argument("--cloud-url", required=True)
    p.add_argument(
        "--operator-token", required=True, help="registers the vehicles and issues their tokens"
    )
    p.add_argument(
        "--trust",
        required=True,
        help="trust config JSON (release and control-plane public keys) given to every agent",
    )
    p.add_argument("--mqtt-url", default=None)
    p.add_argument("--vehicles", type=int, required=True)
    p.add_argument("--processes", type=int, default=1)
    p.add_argument("--profile", default=None, help="YAML profile (docs/demo.md)")
    p.add_argument("--poll-s", type=float, default=None, help="override the profile's poll")
    p.add_argument(
        "--stagger-s",
        type=float,
        default=0.0,
        help="pause between agent starts (spreads the first polls)",
    )
    p.add_argument("--slice", type=_slice, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=fleet)
