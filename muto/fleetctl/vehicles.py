"""`muto vehicles list | get | label`: the fleet's inventory."""

from __future__ import annotations

import argparse
from typing import Any

from rich.table import Table

from muto.fleetctl.connection import USAGE, Connection, FleetError
from muto.fleetctl.output import cell, common, emit, fields, grid, verb

PAGE = 1000


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
        found = [v for v in found if args.status in (v.get("lastStatus"), v.get("presence"))]
    emit(args, found, _table)
    return 0


def _table(vehicles: list[dict[str, Any]]) -> Table:
    return grid(
        None,
        ["VEHICLE", "LABELS", "PRESENCE", "STATUS", "RUNNING", "DESIRED", "ROLLOUT"],
        (
            [
                v["vehicleId"],
                v.get("labels"),
                v.get("presence"),
                _status(v),
                v.get("runningRelease"),
                v.get("desiredRelease"),
                v.get("rolloutId"),
            ]
            for v in vehicles
        ),
    )


def _status(v: dict[str, Any]) -> str:
    codes = v.get("lastReasonCodes") or []
    return f"{cell(v.get('lastStatus'))}" + (f" ({', '.join(codes)})" if codes else "")


def one(args: argparse.Namespace) -> int:
    with Connection.resolve(args).client() as api:
        vehicle = api.call("GET", f"/vehicles/{args.vehicle_id}")["data"]
    emit(args, vehicle, _detail)
    return 0


def _detail(v: dict[str, Any]) -> Table:
    return fields(f"vehicle {v['vehicleId']}", ((k, v[k]) for k in v if k != "vehicleId"))


def label(args: argparse.Namespace) -> int:
    labels: dict[str, str | None] = {}
    for change in args.changes:
        if change.endswith("-") and "=" not in change:
            labels[change[:-1]] = None  # kubectl's `key-`: remove the label
            continue
        key, sep, value = change.partition("=")
        if not sep or not key:
            raise FleetError(f"{change!r}: expected KEY=VALUE or KEY- (to remove)", USAGE)
        labels[key] = value
    with Connection.resolve(args).client() as api:
        vehicle = api.call("PATCH", f"/vehicles/{args.vehicle_id}", json_body={"labels": labels})
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
        help="keep vehicles whose last reported status (converged, failed, blocked...) "
        "or presence (online, offline) is this",
    )

    p = verb(
        actions, "get", "one vehicle, as the inventory knows it", "muto vehicles get veh-0001", one
    )
    common(p)
    p.add_argument("vehicle_id", metavar="ID")

    p = verb(
        actions,
        "label",
        "set (KEY=VALUE) or remove (KEY-) labels of one vehicle",
        "muto vehicles label veh-0001 ring=beta region-",
        label,
    )
    common(p)
    p.add_argument("vehicle_id", metavar="ID")
    p.add_argument("changes", nargs="+", metavar="KEY=VALUE|KEY-")
