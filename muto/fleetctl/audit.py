"""`muto audit`, composed: the verbs of muto/audit/cli.py read either the control plane's
databases (`--data-dir`, `--database-url`: the cloud opens its event log read-only) or
its HTTP API (`--api`, `--url`, `--token-file`: an operator token, no database access),
with the same output. `muto audit timeline` only asks the API (`GET /audit`)."""

from __future__ import annotations

import argparse
import base64
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Notification
from rich.table import Table

from muto.audit.cli import Backend
from muto.audit.cli import register as register_verbs
from muto.audit.verify import Finding
from muto.fleetctl.connection import (
    USAGE,
    Api,
    Connection,
    FleetError,
    answer,
    connection_arguments,
    id_argument,
)
from muto.fleetctl.output import common, emit, grid, reporting, verb

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
    p.add_argument("--vehicle", metavar="ID", type=id_argument("vehicle"))
    p.add_argument("--rollout", metavar="ID", type=id_argument("rollout"))
    p.add_argument("--correlation-id", metavar="ID")
    p.add_argument("--since", metavar="TIME", help="ISO 8601 with its offset, inclusive")
    p.add_argument("--until", metavar="TIME", help="ISO 8601 with its offset, inclusive")
    p.add_argument("--limit", type=int, default=0, metavar="N", help="at most N entries (0: all)")


# -- the other verbs, against the log or the API -----------------------------------------

RECORDS_PAGE = 1000  # records per request (the API's largest page)


class ApiLog:
    """The EventSource port over `GET /audit/records`: stored records as the log keeps
    them, decoded here with the control plane's own mapper, so every verb runs the same
    code on them as on the log itself."""

    def __init__(
        self, api: Api, decode: Callable[[Notification], Any], story: Mapping[str, str]
    ) -> None:
        self.api = api
        self._decode = decode
        self.story = dict(story)  # forVehicle / forRollout: only that story's records

    def _page(self, after: int, limit: int, until: int | None) -> dict[str, Any]:
        params: dict[str, str | int] = {"after": after, "limit": min(limit, RECORDS_PAGE)}
        if until is not None:
            params["until"] = until
        return self.api.call("GET", "/audit/records", params={**params, **self.story})

    def position(self) -> int:
        head: int = self._page(0, 1, None)["metadata"]["head"]
        return head

    def select(self, after: int, limit: int, until: int | None = None) -> Sequence[Notification]:
        """Up to `limit` records: a filtered page may hold fewer while more follow
        (`nextAfter` is where the server stopped reading), so pages are joined."""
        found: list[Notification] = []
        while len(found) < limit:
            page = self._page(after, limit - len(found), until)
            found.extend(_record(r) for r in page["data"])
            after = page["metadata"]["nextAfter"]
            if after is None:
                break
        return found

    def decode(self, record: Notification) -> Any:
        return self._decode(record)


def _record(r: dict[str, Any]) -> Notification:
    return Notification(
        id=r["position"],
        originator_id=UUID(r["originatorId"]),
        originator_version=r["originatorVersion"],
        topic=r["topic"],
        state=base64.b64decode(r["state"]),
    )


class ApiAudit:
    """The audit's backend over a control plane's API (muto.audit.cli.Backend)."""

    def __init__(self, connection: Connection) -> None:
        from muto.cloud.auditing import Decoder

        self.api = connection.client(timeout=300.0)  # verify reads the whole log
        self.decode = Decoder()

    def log(self, vehicle: str | None = None, rollout: str | None = None) -> ApiLog:
        story = {"forVehicle": vehicle} if vehicle else {"forRollout": rollout} if rollout else {}
        return ApiLog(self.api, self.decode, story)

    def verify(self, anchors: Mapping[int, str]) -> Finding:
        params = [("anchor", f"{p}:{h}") for p, h in sorted(anchors.items())]
        response = self.api.send("GET", "/audit/verify", params=params)
        return Finding.from_json(answer(response, self.api.connection)["data"])

    def close(self) -> None:
        self.api.close()


def uses_api(args: argparse.Namespace) -> bool:
    """The API when asked for (--api, --url, --token-file); the databases otherwise."""
    return bool(args.api or args.url or args.token_file)


def open_backend(args: argparse.Namespace) -> Backend:
    if uses_api(args):
        if args.data_dir or args.database_url:
            raise FleetError(
                "read either the databases (--data-dir, --database-url) or the API "
                "(--api, --url, --token-file), not both",
                USAGE,
            )
        return ApiAudit(Connection.resolve(args))
    from muto.cloud.auditing import LocalAudit
    from muto.cloud.settings import Settings

    try:
        settings = Settings.from_env(
            data_dir=Path(args.data_dir) if args.data_dir else None,
            database_url=args.database_url,
        )
    except ValueError as exc:  # a setting named, as `muto cloud` names it
        raise FleetError(str(exc), USAGE) from None
    return LocalAudit(settings)


def place(p: argparse.ArgumentParser) -> None:
    from muto.cloud.cli import store_arguments

    store_arguments(p)
    connection_arguments(p)
    p.add_argument(
        "--api",
        action="store_true",
        help="ask the control plane's API (MUTO_URL, MUTO_TOKEN or the login context) "
        "instead of reading its databases",
    )


def register(sub: Any) -> None:
    actions = register_verbs(sub, place, open_backend, wrap=reporting)
    register_timeline(actions)
