"""`muto agent run | journal | trust`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from muto.agent import journal_cli
from muto.agent.runtime.factory import RUNTIMES

MIB = 1024 * 1024
# Bounds of `run`'s numeric options: (option, attribute, lowest, highest or None). A poll
# under a second is a tight fetch loop against the cloud; a zero budget or limit, a
# cache or archive nothing fits in.
BOUNDS: tuple[tuple[str, str, float, float | None], ...] = (
    ("--poll-s", "poll_s", 1, 86_400),
    ("--cache-budget-mb", "cache_budget_mb", 1, None),
    ("--archive-max-mb", "archive_max_mb", 1, None),
    ("--archive-max-file-mb", "archive_max_file_mb", 1, None),
    ("--archive-max-files", "archive_max_files", 1, None),
    ("--metrics-port", "metrics_port", 1, 65_535),
    ("--min-battery-pct", "min_battery_pct", 0, 100),
)
# Optional modules the agent's libraries import whenever they are installed (as they are
# beside the cloud and the tests), which this asyncio-only process never uses: httpx's
# command-line client (rich, click, pygments) and httpcore's trio support (trio, attrs,
# sortedcontainers): together ~8 MB of RSS. The agent loads httpx only behind an
# HTTP(S)_PROXY (muto/agent/transport/exchange.py). Each library catches the ImportError
# and leaves that feature out.
UNUSED_OPTIONAL_IMPORTS = ("httpx._main", "trio")
TOKEN_ENV = "MUTO_AGENT_TOKEN"
TOKEN_ARGV_REMOVED = (
    "--token was removed (a token in argv is visible to every user in `ps`): "
    f"use --token-file FILE or the {TOKEN_ENV} environment variable"
)


def run(args: argparse.Namespace) -> int:
    skip_unused_optional_imports()
    from muto.agent.compose import RunOptions, local_agent
    from muto.agent.journal import JournalLocked, JournalUnreadable
    from muto.agent.runtime.archive_rules import ArchiveLimits
    from muto.domain.errors import ReasonError
    from muto.domain.gates import SafetyFloor

    if args.token is not None:
        print(f"muto agent: {TOKEN_ARGV_REMOVED}", file=sys.stderr)
        return 2
    problem = option_problem(args)
    if problem is not None:
        print(f"muto agent: {problem}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # behind a proxy: not a line per poll
    try:
        token = given_token(args.token_file, os.environ)
    except (OSError, ValueError) as exc:
        print(f"muto agent: {exc}", file=sys.stderr)
        return 2
    # Resolved from here on (absolute, symbolic links followed): the runtime's workdir is
    # under the data dir, and a stack started in its release directory (or that changes
    # directory) must still find MUTO_RELEASE_DIR, its venv and its logs, at a stable
    # real path.
    options = RunOptions(
        vehicle_id=args.vehicle_id,
        data_dir=Path(args.data_dir).resolve(),
        cloud_url=args.cloud_url,
        mqtt_url=args.mqtt_url,
        vehicle_state=Path(args.vehicle_state).resolve() if args.vehicle_state else None,
        runtime=args.runtime,
        trust=Path(args.trust).resolve() if args.trust else None,
        token=token,
        tenant=args.tenant,
        cache_budget_mb=args.cache_budget_mb,
        archive_limits=ArchiveLimits(**archive_limits(args)),
        reports_via=args.reports_via,
        poll_s=args.poll_s,
        new_incarnation=args.new_incarnation,
        floor=SafetyFloor(
            require_vehicle_stationary=not args.allow_apply_while_moving,
            deny_if_autonomous_mode=not args.allow_apply_in_autonomous_mode,
            require_battery_pct_min=args.min_battery_pct,
        ),
    )
    if options.floor != SafetyFloor():
        logging.getLogger("muto.agent").warning("safety floor set locally: %s", options.floor)
    try:
        return asyncio.run(_serve(local_agent, options, args.metrics_port, args.metrics_address))
    except ReasonError as exc:  # e.g. a runtime that cannot vouch for what is running
        print(f"muto agent: {exc.code}: {exc.detail}", file=sys.stderr)
        return 2
    except (
        FileNotFoundError,
        FileExistsError,
        JournalLocked,
        JournalUnreadable,
        StartFailed,
        ValueError,
    ) as exc:
        print(f"muto agent: {exc}", file=sys.stderr)
        return 2


class StartFailed(Exception):
    """Start-up could not read or write what it needs (a read-only or full data dir, a
    path that is not a directory): one line, the file and what the OS said."""


def start_problem(exc: OSError, data_dir: Path) -> str:
    """The line for an OSError at start-up, naming its file (else the data dir: a write to
    an open file names none); a full disk (or quota) is INSUFFICIENT_DISK."""
    from muto.agent.disk import disk_full
    from muto.domain.reasons import ReasonCode

    if exc.strerror is None:  # raised with a message of our own (provision's, say)
        return str(exc)
    where = exc.filename if exc.filename is not None else f"data dir {data_dir}"
    line = f"cannot start: {where}: {exc.strerror}"
    return f"{ReasonCode.INSUFFICIENT_DISK}: {line}" if disk_full(exc) else line


def option_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with `run`'s options, naming the option, or None."""
    from muto.agent.artifacts import origin
    from muto.domain.broker import Broker

    for option, name, lowest, highest in BOUNDS:
        value = getattr(args, name)
        if value is None:
            continue
        if highest is None and not value >= lowest:  # `not`: NaN fails it too
            return f"{option} must be at least {lowest:g} (got {value:g})"
        if highest is not None and not lowest <= value <= highest:
            return f"{option} must be between {lowest:g} and {highest:g} (got {value:g})"
    if args.cloud_url is not None and origin(args.cloud_url) is None:
        return (
            f"--cloud-url must be an http:// or https:// URL with a host (got {args.cloud_url!r})"
        )
    if args.mqtt_url is not None:
        try:
            Broker.parse(args.mqtt_url)
        except ValueError as exc:
            return f"--mqtt-url: {exc}"
    return None


def skip_unused_optional_imports() -> None:
    """For a process that runs only the agent: an entry of None in sys.modules makes
    `import name` raise ImportError (a module already imported is left alone)."""
    for name in UNUSED_OPTIONAL_IMPORTS:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]


def archive_limits(args: argparse.Namespace) -> dict[str, int]:
    """The archive limits given on the command line (the others keep their defaults)."""
    given = {
        "max_members": args.archive_max_files,
        "max_member_bytes": None
        if args.archive_max_file_mb is None
        else args.archive_max_file_mb * MIB,
        "max_total_bytes": None if args.archive_max_mb is None else args.archive_max_mb * MIB,
    }
    return {name: value for name, value in given.items() if value is not None}


def given_token(token_file: str | None, env: Mapping[str, str]) -> str | None:
    """The bearer token from `--token-file` or else MUTO_AGENT_TOKEN (never argv, which
    every user sees in `ps`); None: use the one kept in the data dir."""
    if token_file is not None:
        token = Path(token_file).read_text().strip()
        if not token:
            raise ValueError(f"--token-file {token_file} is empty")
        return token
    return env.get(TOKEN_ENV, "").strip() or None


async def _serve(
    build: Any, options: Any, metrics_port: int | None = None, metrics_address: str = "127.0.0.1"
) -> int:
    """Run until SIGTERM or SIGINT, then stop gracefully (see Agent.stop)."""
    # Start-up writes to the data dir (the token, the journal, agent-config.json): an
    # OSError there is bad provisioning, one line, not a traceback.
    try:
        agent = build(options)
    except OSError as exc:
        raise StartFailed(start_problem(exc, options.data_dir)) from exc
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    exporter = None
    if metrics_port is not None:  # imported only then: an idle agent stays small
        from muto.agent.metrics_port import serve_metrics

        exporter, _ = serve_metrics(agent.figures_now, metrics_port, metrics_address)
    try:
        await agent.start()
    except OSError as exc:
        await agent.parts.close()
        raise StartFailed(start_problem(exc, options.data_dir)) from exc
    await stop.wait()
    await agent.stop()
    if exporter is not None:
        exporter.shutdown()
        exporter.server_close()
    return 0


def trust(args: argparse.Namespace) -> int:
    """Write the TrustConfig JSON that `run --trust FILE` provisions. A key file that is
    missing or no public key, or a threshold above the keys: one line naming the flag
    and the file, exit 2."""
    from muto.domain.wire import encode
    from muto.trust import TrustConfig
    from muto.trust.files import PUBLIC_FILE_MODE, atomic_write
    from muto.trust.keyset import keyset_from_files

    try:
        config = TrustConfig(
            release_keys=keyset_from_files(
                [Path(p) for p in args.release_key], args.threshold, "--release-key"
            ),
            control_plane_keys=keyset_from_files(
                [Path(p) for p in args.control_plane_key], 1, "--control-plane-key"
            ),
        )
    except ValueError as exc:
        print(f"muto agent: {exc}", file=sys.stderr)
        return 2
    data = encode(config) + b"\n"
    if args.out:
        try:
            atomic_write(Path(args.out), data, PUBLIC_FILE_MODE)  # trust anchors: never 0666
        except OSError as exc:
            print(f"muto agent: --out {args.out}: {exc.strerror or exc}", file=sys.stderr)
            return 2
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
    p.add_argument(
        "--token-file",
        default=None,
        help=f"file holding the vehicle bearer token (or set {TOKEN_ENV}); kept in the data dir",
    )
    p.add_argument("--token", default=None, help=argparse.SUPPRESS)  # removed: see run()
    p.add_argument("--tenant", default="default")
    p.add_argument("--poll-s", type=float, default=30.0)
    p.add_argument("--reports-via", choices=["http", "mqtt"], default="http")
    p.add_argument(
        "--new-incarnation",
        action="store_true",
        help="after restoring the data dir from a backup: number reports under a new "
        "incarnation, so the cloud shows them (it orders a journal's reports by number)",
    )
    p.add_argument("--cache-budget-mb", type=int, default=4096)
    p.add_argument(
        "--archive-max-mb",
        type=int,
        help="most MiB one release archive may unpack to (default 8192)",
    )
    p.add_argument(
        "--archive-max-file-mb", type=int, help="largest file in an archive, MiB (default 4096)"
    )
    p.add_argument(
        "--archive-max-files", type=int, help="most members in an archive (default 100000)"
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus /metrics on this local port (default: off)",
    )
    p.add_argument("--metrics-address", default="127.0.0.1", help="with --metrics-port")
    # The vehicle's own safety floor: a desired state's policy may make the gates stricter,
    # never looser than this. Loosening it is for a test rig, never for a vehicle on a road.
    p.add_argument(
        "--min-battery-pct",
        type=float,
        default=0.0,
        help="never apply below this battery charge, whatever the policy says (default 0)",
    )
    p.add_argument(
        "--allow-apply-while-moving",
        action="store_true",
        help="a test rig only: let a policy with requireVehicleStationary false apply "
        "while the vehicle moves",
    )
    p.add_argument(
        "--allow-apply-in-autonomous-mode",
        action="store_true",
        help="a test rig only: let a policy with denyIfAutonomousMode false apply in "
        "autonomous mode",
    )
    p.set_defaults(func=run)

    p = actions.add_parser("trust", help="write a TrustConfig for --trust")
    p.add_argument(
        "--release-key", action="append", required=True, metavar="PUB",
        help="repeatable: the fleet's release keys as provisioned, or any later key set of "
        "the published rotations (the vehicle takes that set's version from the chain)",
    )  # fmt: skip
    p.add_argument("--threshold", type=int, default=1)
    p.add_argument("--control-plane-key", action="append", required=True, metavar="PUB")
    p.add_argument("--out", default=None)
    p.set_defaults(func=trust)

    journal_cli.register(actions)
