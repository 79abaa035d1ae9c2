"""`muto agent run | journal | trust`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from muto.agent import journal_cli
from muto.agent.runtime.factory import RUNTIMES


def run(args: argparse.Namespace) -> int:
    from muto.agent.compose import RunOptions, local_agent
    from muto.agent.journal import JournalLocked
    from muto.domain.errors import ReasonError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per poll
    options = RunOptions(
        vehicle_id=args.vehicle_id,
        data_dir=Path(args.data_dir),
        cloud_url=args.cloud_url,
        mqtt_url=args.mqtt_url,
        vehicle_state=Path(args.vehicle_state) if args.vehicle_state else None,
        runtime=args.runtime,
        trust=Path(args.trust) if args.trust else None,
        token=args.token,
        tenant=args.tenant,
        cache_budget_mb=args.cache_budget_mb,
        reports_via=args.reports_via,
        poll_s=args.poll_s,
    )
    try:
        return asyncio.run(_serve(local_agent, options))
    except ReasonError as exc:  # e.g. a runtime that cannot vouch for what is running
        print(f"muto agent: {exc.code}: {exc.detail}", file=sys.stderr)
        return 2
    except (FileNotFoundError, FileExistsError, JournalLocked, ValueError) as exc:
        print(f"muto agent: {exc}", file=sys.stderr)
        return 2


async def _serve(build: Any, options: Any) -> int:
    """Run until SIGTERM or SIGINT, then stop gracefully (see Agent.stop)."""
    agent = build(options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await agent.start()
    await stop.wait()
    await agent.stop()
    return 0


def trust(args: argparse.Namespace) -> int:
    """Write the TrustConfig JSON that `run --trust FILE` provisions."""
    from muto.domain.wire import encode
    from muto.trust import KeySet, TrustConfig

    config = TrustConfig(
        release_keys=KeySet(
            keys=[Path(p).read_text() for p in args.release_key], threshold=args.threshold
        ),
        control_plane_keys=KeySet(keys=[Path(p).read_text() for p in args.control_plane_key]),
    )
    data = encode(config) + b"\n"
    if args.out:
        Path(args.out).write_bytes(data)
    else:
        sys.stdout.buffer.write(data)
    return 0


def register(sub: Any) -> None:
    agent = sub.add_parser("agent", help="the vehicle agent")
    actions = agent.add_subparsers(dest="action", required=True)

    p = actions.add_parser("run", help="reconcile this vehicle until SIGTERM")
    p.add_argument("--vehicle-id", required=True)
    p.add_argument("--cloud-url", default=None, help="the control plane's HTTP API")
    p.add_argument("--mqtt-url", default=None, help="mqtt://host:1883 (optional)")
    p.add_argument("--data-dir", required=True, help="everything the agent knows lives here")
    p.add_argument(
        "--vehicle-state",
        default=None,
        help="JSON state file (default DATA_DIR/vehicle-state.json)",
    )
    p.add_argument(
        "--runtime",
        default="process",
        choices=sorted(RUNTIMES),
    )
    p.add_argument("--trust", default=None, help="TrustConfig JSON, read on first start only")
    p.add_argument("--token", default=None, help="vehicle bearer token (kept in the data dir)")
    p.add_argument("--tenant", default="default")
    p.add_argument("--poll-s", type=float, default=30.0)
    p.add_argument("--reports-via", choices=["http", "mqtt"], default="http")
    p.add_argument("--cache-budget-mb", type=int, default=4096)
    p.set_defaults(func=run)

    p = actions.add_parser("trust", help="write a TrustConfig for --trust")
    p.add_argument("--release-key", action="append", required=True, metavar="PUB")
    p.add_argument("--threshold", type=int, default=1)
    p.add_argument("--control-plane-key", action="append", required=True, metavar="PUB")
    p.add_argument("--out", default=None)
    p.set_defaults(func=trust)

    journal_cli.register(actions)
