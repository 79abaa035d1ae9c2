"""`muto desired assign`: point vehicles at a release directly (no canary, no gates)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.table import Table

from muto.domain.desired import AgentConfig
from muto.domain.wire import WireError, convert
from muto.fleetctl.connection import USAGE, Connection, FleetError, id_argument
from muto.fleetctl.output import common, emit, fields, verb
from muto.fleetctl.releases import split_release
from muto.trust.releases import read_yaml_file, without_content


def assign(args: argparse.Namespace) -> int:
    stack, version = split_release(args.release)
    target = (
        {"type": "vehicle", "vehicleId": args.vehicle}
        if args.vehicle
        else {"type": "fleetSelector", "selector": args.selector}
    )
    body: dict[str, Any] = {"target": target, "stack": {"name": stack, "version": version}}
    if args.correlation_id:
        body["correlationId"] = args.correlation_id
    if args.agent_config:
        body["agentConfig"] = read_agent_config(args.agent_config)
    with Connection.resolve(args).client() as api:
        answer = api.write("POST", "/desired-states", json_body=body)
    emit(args, answer["data"], _table)
    return 0


AGENT_CONFIG_HELP = (
    "a YAML or JSON file with the agentConfig (heartbeatS, telemetryEnabled, logLevel). "
    "It is the whole configuration the vehicles will run with: a field left out takes "
    "its default, NOT the value in force on the vehicle"
)


# An agentConfig is three fields: a file larger than this is no agentConfig.
MAX_AGENT_CONFIG_BYTES = 64 * 1024


def read_agent_config(path: str) -> dict[str, Any]:
    """The file's agentConfig, checked here as the API would check it, so that a file
    named by mistake is neither sent nor quoted back (the manifest loader's rules)."""
    try:
        found = read_yaml_file(Path(path), MAX_AGENT_CONFIG_BYTES, "an agentConfig")
        if not isinstance(found, dict):
            raise FleetError(f"{path}: an agentConfig is a mapping, e.g. {{heartbeatS: 10}}", USAGE)
        convert(found, AgentConfig)
    except OSError as exc:
        raise FleetError(f"cannot read the agentConfig in {path}: {exc}", USAGE) from None
    except WireError as exc:
        said = without_content(exc)
        where = f" - at `{said.path}`" if said.path and said.path not in said.message else ""
        raise FleetError(f"invalid agentConfig in {path}: {said.message}{where}", USAGE) from None
    return found


def _table(d: dict[str, Any]) -> Table:
    return fields(
        f"desired state {d['desiredStateRevision']}",
        [
            ("release", d["release"]),
            ("correlationId", d["correlationId"]),
            ("vehicles", [f"{v} (sequence {s})" for v, s in d["vehicles"].items()]),
        ],
    )


def register(sub: Any) -> None:
    group = sub.add_parser("desired", help="assign desired state directly (over the HTTP API)")
    actions = group.add_subparsers(dest="action", required=True, metavar="VERB")
    p = verb(
        actions,
        "assign",
        "sign and assign a release to the vehicles a selector matches, or to one vehicle",
        "muto desired assign --selector 'model=m3 AND region=eu' --release core@1.0.0",
        assign,
    )
    common(p)
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--selector", help="label selector, e.g. 'model=m3'")
    target.add_argument(
        "--vehicle", metavar="ID", type=id_argument("vehicle"), help="exactly this vehicle"
    )
    p.add_argument("--release", required=True, metavar="STACK@VERSION")
    p.add_argument("--correlation-id", help="carried into the audit trail")
    p.add_argument("--agent-config", metavar="FILE", help=AGENT_CONFIG_HELP)
