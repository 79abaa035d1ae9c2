"""`muto vehicles list | get | label`: the fleet's inventory."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from muto.domain.gates import SafetyFloor
from muto.domain.messages import PresenceState
from muto.domain.reports import HealthStatus, ReconcileStatus
from muto.domain.wire import convert
from muto.fleetctl.connection import USAGE, Connection, FleetError, api_path, id_argument
from muto.fleetctl.output import cell, common, emit, fields, grid, verb

PAGE = 1000
# What `--status` can match: a reconcile report's status, the presence the API shows
# ("stale": online but silent, muto.domain.presence.shown_presence), or the health.
# Anything else matched nothing and printed an empty table, as if no vehicle were in
# that state.
STATUSES = (
    *(s.value for s in ReconcileStatus),
    *(p.value for p in PresenceState),
    "stale",
    *(h.value for h in HealthStatus),
)


def listing(args: argparse.Namespace) -> int:
    found: list[dict[str, Any]] = []
    params: dict[str, str | int] = {"limit": PAGE}
    if args.selector:
        params["selector"] = args.selector
    with Connection.resolve(args).client() as api:
        while True:  # every page: the status filter is applied here
            page = api.call("GET", "/vehicles", params=params)
            found.extend(page["data"])
            cursor = page["metadata"].get("nextCursor")
            if not cursor:
                break
            params["cursor"] = cursor
    if args.status:
        said = ("lastStatus", "presence", "health")
        found = [v for v in found if args.status in (v.get(k) for k in said)]
    emit(args, found, _table)
    return 0


def _table(vehicles: list[dict[str, Any]]) -> Table:
    return grid(
        None,
        [
            "VEHICLE",
            "LABELS",
            "PRESENCE",
            "STATUS",
            "HEALTH",
            "RUNNING",
            "DESIRED",
            "ROLLOUT",
            "AGENT",
        ],
        (
            [
                v["vehicleId"],
                v.get("labels"),
                v.get("presence"),
                _status(v),
                _health(v),
                v.get("runningRelease"),
                v.get("desiredRelease"),
                v.get("rolloutId"),
                ((v.get("reported") or {}).get("agent") or {}).get("agentVersion"),
            ]
            for v in vehicles
        ),
    )


def _status(v: dict[str, Any]) -> str:
    codes = v.get("lastReasonCodes") or []
    return f"{cell(v.get('lastStatus'))}" + (f" ({', '.join(codes)})" if codes else "")


def _health(v: dict[str, Any]) -> str:
    """The health and why (`unhealthy (ROS_GRAPH_DEGRADED)`)."""
    codes = v.get("healthReasonCodes") or []
    return f"{cell(v.get('health'))}" + (f" ({', '.join(codes)})" if codes else "")


def one(args: argparse.Namespace) -> int:
    with Connection.resolve(args).client() as api:
        vehicle = api.call("GET", api_path("vehicles", args.vehicle_id))["data"]
    emit(args, vehicle, _detail)
    return 0


def _detail(v: dict[str, Any]) -> Table:
    rows = [(k, v[k]) for k in v if k not in ("vehicleId", "reported")]
    said = v.get("reported") or {}
    agent = said.get("agent") or {}
    if agent:
        rows.append(("agent", f"{agent.get('agentVersion')} ({agent.get('runtime')})"))
        rows.append(("platform", {k: agent.get(k) for k in ("model", "os", "rosDistro")}))
        rows.append(("safetyFloor", _floor(agent.get("safetyFloor"))))
    components = said.get("components")
    if components is not None:
        rows.append(("components", [_component(c) for c in components]))
    if said:
        rows.append(("reportedAt", said.get("componentsAt") or said.get("agentAt")))
    return fields(f"vehicle {v['vehicleId']}", rows)


def _floor(said: dict[str, Any] | None) -> str:
    """The vehicle's own gates, a loosening first: what an operator must not miss."""
    if said is None:
        return "not said (an agent before muto.agent-metadata.v2)"
    floor = convert(said, SafetyFloor)
    kept = [
        gate
        for gate, on in (
            ("stationary", floor.require_vehicle_stationary),
            ("manual mode", floor.deny_if_autonomous_mode),
            (f"battery ≥ {floor.require_battery_pct_min:g} %", floor.require_battery_pct_min > 0),
        )
        if on
    ]
    said_kept = f"requires {', '.join(kept)}" if kept else "requires nothing"
    return f"loosened: {', '.join(floor.loosened)}; {said_kept}" if floor.loosened else said_kept


def _component(c: dict[str, Any]) -> str:
    return f"{c.get('role')}: {c.get('ref')} ({str(c.get('digest'))[:19]}…)"


def refresh(args: argparse.Namespace) -> int:
    with Connection.resolve(args).client(timeout=30) as api:
        answer = api.call("POST", api_path("vehicles", args.vehicle_id, "refresh"))["data"]
    emit(args, answer, _refreshed)
    return 0


def _refreshed(answer: dict[str, Any]) -> Group:
    head = Text(
        f"request {answer['requestId']}: {'ok' if answer['ok'] else 'NOT ok'}, "
        f"re-published {', '.join(answer['snapshotsUpdated']) or 'nothing'}"
    )
    return Group(head, Text(""), _detail(answer["vehicle"]))


def pairs(texts: list[str], removable: bool) -> dict[str, str | None]:
    """KEY=VALUE (and, if `removable`, KEY- for "remove KEY", as kubectl writes it)."""
    found: dict[str, str | None] = {}
    for text in texts:
        if removable and text.endswith("-") and "=" not in text:
            found[text[:-1]] = None
            continue
        key, sep, value = text.partition("=")
        if not sep or not key:
            wanted = "KEY=VALUE or KEY- (to remove)" if removable else "KEY=VALUE"
            raise FleetError(f"{text!r}: expected {wanted}", USAGE)
        found[key] = value
    return found


def register_vehicle(args: argparse.Namespace) -> int:
    body = {
        "vehicleId": args.vehicle_id,
        "labels": pairs(args.labels, removable=False),
        "attributes": pairs(args.attribute or [], removable=False),
    }
    with Connection.resolve(args).client() as api:
        vehicle = api.call("POST", "/vehicles", json_body=body)
    emit(args, vehicle["data"], _detail)
    return 0


def label(args: argparse.Namespace) -> int:
    labels = pairs(args.changes, removable=True)
    with Connection.resolve(args).client() as api:
        vehicle = api.call(
            "PATCH", api_path("vehicles", args.vehicle_id), json_body={"labels": labels}
        )
    emit(args, vehicle["data"], _detail)
    return 0


def register(sub: Any) -> None:
    group = sub.add_parser("vehicles", help="the fleet's inventory (over the HTTP API)")
    actions = group.add_subparsers(dest="action", required=True, metavar="VERB")

    p = verb(
        actions,
        "list",
        "list vehicles, optionally by label selector and status",
        "muto vehicles list --selector 'model=m3 AND region=eu' --status failed -o json",
        listing,
    )
    common(p)
    p.add_argument("--selector", help="label selector, e.g. 'model=m3 AND region=eu'")
    p.add_argument(
        "--status",
        choices=STATUSES,
        metavar="STATUS",
        help="keep vehicles whose last reported status, presence or health is this: "
        + ", ".join(STATUSES),
    )

    p = verb(
        actions,
        "register",
        "register a vehicle with its labels (the same again is a no-op)",
        "muto vehicles register car-1 model=m3 region=eu --attribute os=ubuntu-22.04",
        register_vehicle,
    )
    common(p)
    p.add_argument("vehicle_id", metavar="ID", type=id_argument("vehicle"))
    p.add_argument("labels", nargs="*", metavar="KEY=VALUE", help="labels (selectors match them)")
    p.add_argument("--attribute", action="append", metavar="KEY=VALUE", help="repeatable")

    p = verb(
        actions, "get", "one vehicle, as the inventory knows it", "muto vehicles get veh-0001", one
    )
    common(p)
    p.add_argument("vehicle_id", metavar="ID", type=id_argument("vehicle"))

    p = verb(
        actions,
        "refresh",
        "ask a vehicle (over MQTT) to re-publish its snapshots; shows its answer and "
        "what it now reports (agent version, components). Changes nothing on the vehicle",
        "muto vehicles refresh car-1",
        refresh,
    )
    common(p)
    p.add_argument("vehicle_id", metavar="ID", type=id_argument("vehicle"))

    p = verb(
        actions,
        "label",
        "set (KEY=VALUE) or remove (KEY-) labels of one vehicle",
        "muto vehicles label veh-0001 ring=beta region-",
        label,
    )
    common(p)
    p.add_argument("vehicle_id", metavar="ID", type=id_argument("vehicle"))
    p.add_argument("changes", nargs="+", metavar="KEY=VALUE|KEY-")
