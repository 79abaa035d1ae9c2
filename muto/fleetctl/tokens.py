"""`muto tokens create | revoke`: bearer tokens, through the API (an operator token)."""

from __future__ import annotations

import argparse
import errno
import os
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.table import Table

from muto.fleetctl.connection import USAGE, Connection, FleetError, api_path, id_argument
from muto.fleetctl.output import common, emit, fields, verb


def create(args: argparse.Namespace) -> int:
    body: dict[str, Any] = (
        {"role": "vehicle", "vehicleId": args.vehicle} if args.vehicle else {"role": "operator"}
    )
    # Opened before the token is issued: a path that cannot be written is refused with
    # nothing issued (found after, it was a traceback and a secret nobody had).
    secret = SecretFile(Path(args.secret_file)) if args.secret_file else None
    try:
        with Connection.resolve(args).client() as api:
            issued = api.write("POST", "/tokens", json_body=body)["data"]
    except BaseException:
        if secret is not None:
            secret.discard()
        raise
    if secret is not None:  # the secret to a 0600 file, never to stdout in any format
        secret.write(issued)
        mode = " (mode 0600)" if secret.regular else ""
        print(f"token {issued['tokenId']} written to {secret.path}{mode}", file=sys.stderr)
        if args.output == "table":
            return 0
        # JSON and YAML say where the secret went, in its place.
        issued = {
            **{k: v for k, v in issued.items() if k != "token"},
            "secretFile": str(secret.path),
        }
    emit(args, issued, _table)
    return 0


class SecretFile:
    """Where `--secret-file` puts the secret: a new 0600 file beside the destination,
    renamed over it once written, so an existing file is replaced rather than written
    into with its old mode (os.open's 0600 applies only to a file it creates). A pipe or
    device (`--secret-file >(vault ...)`) is written as is: its mode is not a file's."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.target = path
        self.fd: int | None = None
        self.temp: Path | None = None
        try:
            try:
                found: os.stat_result | None = os.stat(path)
            except FileNotFoundError:
                found = None
            if found is not None and stat.S_ISDIR(found.st_mode):
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
            self.regular = found is None or stat.S_ISREG(found.st_mode)
            if not self.regular:
                self.fd = os.open(path, os.O_WRONLY)
            else:
                self.target = Path(os.path.realpath(path))  # through a symlink, as before
                self.fd, temp = tempfile.mkstemp(  # mode 0600, whatever the umask
                    prefix=f".{self.target.name}.", suffix=".tmp", dir=self.target.parent
                )
                self.temp = Path(temp)
        except OSError as exc:
            raise FleetError(
                f"cannot write the secret to {path}: {exc.strerror}; no token was issued", USAGE
            ) from None

    def write(self, issued: dict[str, Any]) -> None:
        fd, self.fd = self.fd, None  # the file object below closes it
        if fd is None:
            raise RuntimeError("the secret file is written once")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(issued["token"] + "\n")
                f.flush()
                if self.temp is not None:
                    os.fsync(f.fileno())  # on disk before it replaces the old file
            if self.temp is not None:
                os.replace(self.temp, self.target)
                self.temp = None
        except OSError as exc:
            self.discard()
            token_id = issued["tokenId"]
            raise FleetError(
                f"token {token_id} was issued but its secret could not be written to "
                f"{self.path}: {exc.strerror}; revoke it with `muto tokens revoke {token_id}`",
                USAGE,
            ) from None

    def discard(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.temp is not None:
            self.temp.unlink(missing_ok=True)
            self.temp = None


def _table(t: dict[str, Any]) -> Table:
    return fields(
        f"token {t['tokenId']} (shown once)",
        [("token", t["token"]), ("role", t["role"]), ("vehicleId", t["vehicleId"])],
    )


def revoke(args: argparse.Namespace) -> int:
    with Connection.resolve(args).client() as api:
        done = api.call("POST", api_path("tokens", args.token_id, "revoke"))["data"]
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
    who.add_argument("--vehicle", metavar="ID", type=id_argument("vehicle"))
    p.add_argument("--secret-file", metavar="FILE", help="write the secret there (mode 0600)")

    p = verb(
        actions,
        "revoke",
        "revoke a token (effective within 5 s)",
        "muto tokens revoke tok-1a2b",
        revoke,
    )
    common(p)
    p.add_argument("token_id", metavar="TOKEN_ID", type=id_argument("token"))
