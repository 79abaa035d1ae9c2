"""`muto rollouts create | list | get | pause | resume | rollback | status`: canary
rollouts, and a live view of one that ends with an exit code saying how it ended."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from muto.domain.requests import RolloutThresholds
from muto.domain.rollout_rules import stored_share
from muto.domain.wire import convert
from muto.fleetctl.connection import Api, Connection, api_path, id_argument
from muto.fleetctl.desired import AGENT_CONFIG_HELP, read_agent_config
from muto.fleetctl.output import (
    cell,
    common,
    console,
    emit,
    emit_frame,
    fields,
    grid,
    stdout_closed,
    verb,
)
from muto.fleetctl.releases import split_release

# How `muto rollouts status` ends (docs/cli.md): 0 completed; the rest say why not.
ENDED = {"completed": 0, "rolled_back": 10, "aborted": 11}
RUNNING = 12  # still in canary or wave (without --watch, or at --timeout)
PAUSED = 13  # paused: waits for an operator to resume or roll back
# Rolled back or aborted, but members given the rollback have not confirmed it yet: they
# may still run the release (without --watch, or at --timeout).
ROLLING_BACK = 14
WITH_ROLLBACKS = frozenset({"rolled_back", "aborted"})


def outcome(rollout: dict[str, Any]) -> int | None:
    """The exit code once the rollout is final (every rollback it gave confirmed) or
    paused; None while it runs or its rollbacks are still outstanding."""
    state = rollout["state"]
    if state in WITH_ROLLBACKS and rollout.get("outstandingTotal"):
        return None  # final, and in a final state only unconfirmed rollbacks are outstanding
    if state in ENDED:
        return ENDED[state]
    return PAUSED if rollout.get("paused") else None


def create(args: argparse.Namespace) -> int:
    stack, version = split_release(args.release)
    body: dict[str, Any] = {"selector": args.selector, "stack": stack, "version": version}
    if args.rollout_id:
        body["rolloutId"] = args.rollout_id
    thresholds = {
        k: v
        for k, v in (
            ("convergedPct", args.converged_pct),
            ("canaryDeadlineSec", args.canary_deadline),
            ("waveDeadlineSec", args.wave_deadline),
            ("bakeSec", args.bake),
        )
        if v is not None
    }
    if thresholds:
        body["thresholds"] = thresholds
    if args.agent_config:
        body["agentConfig"] = read_agent_config(args.agent_config)
    with Connection.resolve(args).client() as api:
        started = api.write("POST", "/rollouts", json_body=body)["data"]
    emit(args, started, view)
    return 0


def _limit(name: str) -> Callable[[str], float]:
    """A deadline or bake argument, checked by the API's own rule (RolloutThresholds:
    above 0, or 0 for a bake, and at most ten years) before anything is sent."""

    def parse(text: str) -> float:
        try:
            value = float(text)
            convert({name: value}, RolloutThresholds)
        except ValueError as exc:  # WireError is one
            raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
        return value

    return parse


def listing(args: argparse.Namespace) -> int:
    with Connection.resolve(args).client() as api:
        found = api.call("GET", "/rollouts")["data"]
    emit(args, found, _table)
    return 0


def _table(rollouts: list[dict[str, Any]]) -> Table:
    return grid(
        None,
        ["ROLLOUT", "RELEASE", "STATE", "PAUSED", "SELECTOR", "UPDATED"],
        (
            [
                r["rolloutId"],
                r.get("release"),
                r.get("state"),
                r.get("paused"),
                r.get("selector"),
                r.get("updatedAt"),
            ]
            for r in rollouts
        ),
    )


def one(args: argparse.Namespace) -> int:
    with Connection.resolve(args).client() as api:
        found = api.call("GET", api_path("rollouts", args.rollout_id))["data"]
    emit(args, found, view)
    return 0


def _act(action: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        with Connection.resolve(args).client() as api:
            found = api.call("POST", api_path("rollouts", args.rollout_id, action))["data"]
        emit(args, found, view)
        return 0

    return run


def status(args: argparse.Namespace) -> int:
    """Print the rollout until it ends, is paused, or --timeout: once without --watch; a
    live view on a terminal; otherwise (a file, a pipe, `-o json|yaml`) each change as
    it comes, so that a log shows it and `| head` ends it (docs/cli.md)."""
    with Connection.resolve(args).client() as api:
        rollout = _get(api, args.rollout_id)
        if not args.watch:
            emit(args, rollout, view)
            return exit_code(rollout)
        out = console()
        if args.output == "table" and out.is_terminal:
            with Live(view(rollout), console=out, refresh_per_second=4) as live:
                rollout = _wait(api, args, rollout, lambda r: live.update(view(r)))
        else:
            rollout = _wait(api, args, rollout, Changes(args).show)
    return exit_code(rollout)


class Changes:
    """A watch off a terminal: writes the rollout when it differs from the last written
    (the first at once), and stops the watch when stdout's reader has left."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.last: dict[str, Any] | None = None

    def show(self, rollout: dict[str, Any]) -> None:
        if rollout != self.last:
            emit_frame(self.args, rollout, view)
            self.last = rollout
        elif stdout_closed():
            raise BrokenPipeError("stdout's reader left")  # muto.cli: exit 141, quietly


def _get(api: Api, rollout_id: str) -> dict[str, Any]:
    found: dict[str, Any] = api.call("GET", api_path("rollouts", rollout_id))["data"]
    return found


def _wait(api: Api, args: argparse.Namespace, rollout: dict[str, Any], show: Any) -> dict[str, Any]:
    deadline = time.monotonic() + args.timeout if args.timeout else None
    show(rollout)
    while outcome(rollout) is None and (deadline is None or time.monotonic() < deadline):
        time.sleep(args.interval)
        rollout = _get(api, args.rollout_id)
        show(rollout)
    return rollout


def exit_code(rollout: dict[str, Any]) -> int:
    found = outcome(rollout)
    if found is not None:
        return found
    return ROLLING_BACK if rollout["state"] in WITH_ROLLBACKS else RUNNING


def _deadline(r: dict[str, Any]) -> str | None:
    """When the phase times out; while paused, its clock stands still: what is left."""
    left = r.get("deadlineRemainingS")
    if r.get("paused") and left is not None:
        return f"paused, {left:.0f} s left when resumed"
    deadline: str | None = r.get("deadline")
    return deadline


def view(r: dict[str, Any]) -> Group:
    """Phase, canaries, per-wave counts with blocked and failed by reason, gate decisions."""
    state = r["state"] + (" (paused)" if r.get("paused") else "")
    head = fields(
        f"rollout {r['rolloutId']}",
        [
            ("release", r.get("release")),
            ("state", state),
            ("selector", r.get("selector")),
            ("thresholds", r.get("thresholds")),
            ("deadline", _deadline(r)),
            ("updated", r.get("updatedAt")),
        ],
    )
    phases = grid(
        "progress",
        [
            "PHASE",
            "TARGETED",
            "PENDING",
            "ASSIGNED",
            "CONVERGED",
            "BLOCKED (by reason)",
            "FAILED (by reason)",
            "ROLLED BACK (by reason)",
            "ROLLING BACK (why not yet)",
            "SUPERSEDED",
            "NOT ASSIGNED",
        ],
        (
            [
                name,
                p["targeted"],
                p["pending"],
                p["assigned"],
                p["converged"],
                _by(p["deferred"], p["deferredBy"]),
                _by(p["failed"], p["failedBy"]),
                _by(p["rolledBack"], p.get("rolledBackBy", {})),  # an older server has none
                _by(p.get("rollingBack", 0), p.get("rollingBackBy", {})),
                p.get("superseded", 0),
                p.get("notAssigned", 0),
            ]
            for name, p in sorted(r.get("phases", {}).items(), key=lambda kv: kv[0] != "canary")
        ),
    )
    canaries = grid(
        "canaries",
        ["VEHICLE", "STATUS", "REASONS"],
        (
            [v["vehicleId"], v["status"], v["reasonCodes"]]
            for v in r.get("vehicles", [])
            if v["phase"] == "canary"
        ),
    )
    decisions = grid(
        "gate decisions",
        ["AT", "DECISION", "CONVERGED", "WHY"],
        (
            [
                d.get("at"),
                d.get("event"),
                _pct(d.get("evaluation", {})),
                _why(d.get("evaluation", {})),
            ]
            for d in r.get("decisions", [])
        ),
    )
    parts: list[Any] = [head, Text(""), phases, Text(""), canaries]
    parts += [Text(""), decisions] if r.get("decisions") else [Text("no gate decision yet")]
    if r.get("outstanding"):  # who the rollout still waits for (a rollback: who has not taken it)
        total = r.get("outstandingTotal", len(r["outstanding"]))
        parts += [Text(""), _outstanding(r["outstanding"], total)]
    return Group(*parts)


def _outstanding(members: list[dict[str, Any]], total: int) -> Table:
    shown = len(members)
    title = f"outstanding ({total})" if total == shown else f"outstanding ({shown} of {total})"
    return grid(
        title,
        ["VEHICLE", "STATUS", "REASONS", "PRESENCE", "LAST REPORT"],
        (
            [
                m["vehicleId"],
                m["status"],
                m.get("reasonCodes"),
                m.get("presence"),
                f"{m.get('lastStatus')} {cell(m.get('lastReasonCodes') or [])}".strip()
                if m.get("lastStatus")
                else None,
            ]
            for m in members
        ),
    )


def _by(count: int, reasons: dict[str, int]) -> str:
    return f"{count}" + (f" ({cell(reasons)})" if reasons else "")


def _pct(e: dict[str, Any]) -> str:
    """The share of the members the gate counted (deferred ones leave at the deadline)."""
    if "convergedPct" not in e:
        return "-"
    needs = f"needs {e.get('thresholdPct'):.0f}%"
    share = stored_share(e)
    if share is None:
        return f"none counted ({needs})"
    counted = f" of {e['counted']} counted" if e.get("counted") else ""  # older: no count
    return f"{share:.0f}%{counted} ({needs})"


def _why(e: dict[str, Any]) -> str:
    parts = [f"verdict {e.get('verdict')}"] if e.get("verdict") else []
    if e.get("reasonCodes"):
        parts.append("reasons " + ", ".join(e["reasonCodes"]))
    if e.get("failedBy"):
        parts.append("failed " + cell(e["failedBy"]))
    if e.get("deferredBy"):
        parts.append("blocked " + cell(e["deferredBy"]))
    return "; ".join(parts) or "-"


def register(sub: Any) -> None:
    group = sub.add_parser("rollouts", help="canary rollouts (over the HTTP API)")
    actions = group.add_subparsers(dest="action", required=True, metavar="VERB")

    p = verb(
        actions,
        "create",
        "start a canary rollout of a release over the vehicles a selector matches",
        "muto rollouts create --selector model=m3 --release core@1.1.0 --rollout-id ro-1",
        create,
    )
    common(p)
    p.add_argument("--selector", required=True, help="label selector, e.g. 'model=m3'")
    p.add_argument("--release", required=True, metavar="STACK@VERSION")
    p.add_argument("--rollout-id", type=id_argument("rollout"), help="default: generated")
    p.add_argument("--converged-pct", type=float, help="gate threshold (default 95)")
    p.add_argument(
        "--canary-deadline", type=_limit("canaryDeadlineSec"), metavar="SEC", help="default 3600"
    )
    p.add_argument(
        "--wave-deadline", type=_limit("waveDeadlineSec"), metavar="SEC", help="default 21600"
    )
    p.add_argument(
        "--bake",
        type=_limit("bakeSec"),
        metavar="SEC",
        help="watch a passed wave this long (default 600)",
    )
    p.add_argument("--agent-config", metavar="FILE", help=AGENT_CONFIG_HELP)

    p = verb(actions, "list", "rollouts, newest first", "muto rollouts list -o yaml", listing)
    common(p)

    for name, summary in (
        ("get", "one rollout: phases, vehicles, decisions"),
        ("pause", "pause a rollout (no gate advances it until resumed)"),
        ("resume", "resume a paused rollout"),
        ("rollback", "roll every vehicle of the rollout back to what it ran before"),
    ):
        p = verb(
            actions,
            name,
            summary,
            f"muto rollouts {name} ro-1",
            one if name == "get" else _act(name),
        )
        common(p)
        p.add_argument("rollout_id", metavar="ID", type=id_argument("rollout"))

    p = verb(
        actions,
        "status",
        "the rollout's progress; with --watch a live view until it ends (a rollback: "
        "until every member confirmed it). Exit code: 0 completed, 10 rolled back, 11 "
        "aborted, 12 still running, 13 paused, 14 members still rolling back",
        "muto rollouts status ro-1 --watch --timeout 600",
        status,
    )
    common(p)
    p.add_argument("rollout_id", metavar="ID", type=id_argument("rollout"))
    p.add_argument(
        "--watch",
        "-w",
        action="store_true",
        help="follow it until it ends (its rollbacks confirmed) or is paused",
    )
    p.add_argument(
        "--timeout", type=float, default=0, metavar="SEC", help="stop watching (0: never)"
    )
    p.add_argument("--interval", type=float, default=1.0, metavar="SEC", help="poll period")
