"""`muto audit timeline`: the audit trail through the HTTP API (`GET /audit`), for an
operator with a token and no access to the control plane's database. The other `muto
audit` verbs read the event log itself (replay, explain, export, verify)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.table import Table

from muto.fleetctl.connection import Connection
from muto.fleetctl.output import common, emit, grid, verb

PAGE = 1000


def timeline(args: argparse.Namespace) -> int:
    params: dict[str, str | int] = {"limit": min(args.limit, PAGE) if args.limit else PAGE}
    for name, value in (
        ("vehicleId", args.vehicle),
        ("rolloutId", args.rollout),
        ("correlationId", args.correlation_id),
        ("since", args.since),
        ("until", args.until),
    ):
        if value:
            params[name] = value
    found: list[dict[str, Any]] = []
    with Connection.resolve(args).client() as api:
        while True:  # every page, oldest first, up to --limit
            page = api.call("GET", "/audit", params=params)
            found.extend(page["data"])
            after = page["metadata"].get("nextAfter")
            if after is None or (args.limit and len(found) >= args.limit):
                break
            params["after"] = after
    emit(args, found[: args.limit] if args.limit else found, _table)
    return 0


def _table(entries: list[dict[str, Any]]) -> Table:
    return grid(
        None,
        ["POSITION", "AT", "EVENT", "VEHICLE", "ROLLOUT", "ACTOR", "DATA"],
        (
            [
                e["position"],
                e["at"],
                e["eventType"],
                e.get("vehicleId"),
                e.get("rolloutId"),
                e.get("actor"),
                _brief(e.get("data") or {}),
            ]
            for e in entries
        ),
    )


# Already in their own column, or bookkeeping: left out of the DATA column.
SHOWN = {"actor", "correlation_id", "vehicle_id", "rollout_id", "timestamp", "originator_id"}


def _brief(data: dict[str, Any], width: int = 120) -> str:
    rest = {k: v for k, v in data.items() if k not in SHOWN and not k.startswith("originator")}
    text = json.dumps(rest, separators=(",", ":"), sort_keys=True)
    return text if len(text) <= width else text[: width - 1] + "…"


def register_timeline(actions: Any) -> None:
    p = verb(
        actions,
        "timeline",
        "the audit trail through the HTTP API (an operator token, no database access)",
        "muto audit timeline --vehicle car-1 --since 2026-01-01T00:00:00Z",
        timeline,
    )
    common(p)
    p.add_argument("--vehicle", metavar="ID")
    p.add_argument("--rollout", metavar="ID")
    p.add_argument("--correlation-id", metavar="ID")
    p.add_argument("--since", metavar="TIME", help="ISO 8601, inclusive")
    p.add_argument("--until", metavar="TIME", help="ISO 8601, inclusive")
    p.add_argument("--limit", type=int, default=0, metavar="N", help="at most N entries (0: all)")
