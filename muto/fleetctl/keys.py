"""`muto keys publish-rotation | rotations`: the release key rotations of the fleet.

A rotation is signed offline (`muto release rotate-keys`, by the keys in force and the
new ones); publishing it makes the control plane check it against the keys in force and
serve it to every vehicle at its next poll (docs/trust.md, "Rotating release keys")."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rich.table import Table

from muto.domain.desired import Envelope
from muto.domain.errors import ReasonError
from muto.domain.wire import WireError, decode
from muto.fleetctl.connection import USAGE, Connection, FleetError
from muto.fleetctl.output import common, emit, fields, grid, verb
from muto.trust.dsse import KEY_ROTATION_TYPE, read_envelope


def publish(args: argparse.Namespace) -> int:
    signed = Path(args.signed)
    try:
        body = signed.read_bytes()
        read_envelope(decode(body, Envelope), KEY_ROTATION_TYPE)
    except OSError as exc:
        raise FleetError(f"cannot read {signed}: {exc.strerror or exc}", USAGE) from None
    except (WireError, ReasonError) as exc:  # EnvelopeError is a ReasonError
        raise FleetError(
            f"{signed} is not a signed key rotation (from `muto release rotate-keys`): {exc}",
            USAGE,
        ) from None
    with Connection.resolve(args).client() as api:
        answer = api.call(
            "POST",
            "/trust/key-rotations",
            content=body,
            headers={"Content-Type": "application/json"},
        )
    found, created = answer["data"], (answer.get("metadata") or {}).get("created")
    said = "published" if created else "was published already: nothing changed for"
    print(f"{said} release key set version {found['version']}", file=sys.stderr)
    emit(args, found, _detail)
    return 0


def rotations(args: argparse.Namespace) -> int:
    with Connection.resolve(args).client() as api:
        found = api.call("GET", "/trust/key-rotations")["data"]
    emit(args, found, _table)
    return 0


def _keys(r: dict[str, Any]) -> str:
    return f"{r['threshold']} of {len(r['keyIds'])}"


def _table(found: list[dict[str, Any]]) -> Table:
    return grid(
        None,
        ["VERSION", "KEYS", "KEY IDS", "PUBLISHED", "BY"],
        (
            [
                r["version"],
                _keys(r),
                ", ".join(k[:16] + "…" for k in r["keyIds"]),
                r["publishedAt"],
                r["actor"],
            ]
            for r in found
        ),
    )


def _detail(r: dict[str, Any]) -> Table:
    return fields(
        f"release key set version {r['version']}",
        [
            ("keys", _keys(r)),
            ("keyIds", r["keyIds"]),
            ("publishedAt", r["publishedAt"]),
            ("by", r["actor"]),
        ],
    )


def register(sub: Any) -> None:
    group = sub.add_parser("keys", help="release key rotations (over the HTTP API)")
    actions = group.add_subparsers(dest="action", required=True, metavar="VERB")

    p = verb(
        actions,
        "publish-rotation",
        "publish a signed release key rotation: every vehicle gets it at its next poll",
        "muto keys publish-rotation rotation.signed.json",
        publish,
    )
    common(p)
    p.add_argument("signed", metavar="SIGNED.json", help="from `muto release rotate-keys`")

    p = verb(
        actions,
        "rotations",
        "the published release key rotations, oldest first",
        "muto keys rotations",
        rotations,
    )
    common(p)
