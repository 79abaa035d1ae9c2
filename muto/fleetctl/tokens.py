"""`muto tokens create | revoke`: bearer tokens, through the API (an operator token)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from rich.table import Table

from muto.fleetctl.connection import Connection
from muto.fleetctl.output import common, emit, fields, verb


def create(args: argparse.Namespace) -> int:
    body: dict[str, Any] = (
        {"role": "vehicle", "vehicleId": args.vehicle} if args.vehicle else {"role": "operator"}
    )
    with Connection.resolve(args).client() as api:
        issued = api.call("POST", "/tokens", json_body=body)["data"]
    if args.secret_file:  # the secret to a 0600 file, not the terminal
        path = Path(args.secret_file)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(issued["token"] + "\n")
        print(f"token {issued['tokenId']} written to {path} (mode 0600)", file=sys.stderr)
        if args.output == "table":
            return 0
    emit(args, issued, _table)
    return 0


def _table(t: dict[str, Any]) -> Table:
    return fields(
        f"token {t['tokenId']} (shown once)",
        [("token", t["token"]), ("role", t["role"]), ("vehicleId", t["vehicleId"])],
    )


def revoke(args: argparse.Namespace) -> int:
    with Connection.resolve(args).client() as api:
        done = api.call("POST", f"/tokens/{args.token_id}/revoke")["data"]
    emit(args, done, lambda d: f"revoked {d['tokenId']}")
    return 0


def register(sub: Any) -> None:
    group = sub.add_parser("tokens", help="issue and revoke bearer tokens (over the HTTP API)")
    actions = group.add_subparsers(dest="action", required=True, metavar="VERB")
    p = verb(
        actions,
        "create",
        "issue an operator token, or one bound to a vehicle (the secret is shown once)",
        "muto tokens create --vehicle veh-0001 --secret-file veh-0001.token",
        create,
    )
    common(p)
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--operator", action="store_true")
    who.add_argument("--vehicle", metavar="ID")
    p.add_argument("--secret-file", metavar="FILE", help="write the secret there (mode 0600)")

    p = verb(
        actions,
        "revoke",
        "revoke a token (effective within 5 s)",
        "muto tokens revoke tok-1a2b",
        revoke,
    )
    common(p)
    p.add_argument("token_id", metavar="TOKEN_ID")
