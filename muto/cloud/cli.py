"""`muto cloud serve | token | seed | import-vehicles | backup | reset`."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from muto.cloud.settings import DATABASE_URL, ROLES, Settings

if TYPE_CHECKING:
    from muto.cloud.bootstrap import ControlPlane

DATA_DIR = "data_dir (--data-dir, MUTO_DATA_DIR)"
# What to do when the views are ahead of the event log (projections.ViewsAhead).
VIEWS_AHEAD = (
    "if the event log was restored from a backup (or copied without its -wal file), "
    "start once with `muto cloud serve --rebuild-views` to rebuild the views from it; "
    "otherwise the log lost events: `muto audit verify` says from which position (run "
    "it before any rebuild: the audit chain in the views is the evidence)"
)


def _settings(args: argparse.Namespace) -> Settings:
    """The flags over the MUTO_* environment; a bad value ends the command (exit 2),
    named, before anything is opened."""
    from muto.cloud.signing import release_keyset

    try:
        settings = _read_settings(args)
        release_keyset(settings)  # the key files and the threshold, checked up front
        return settings
    except ValueError as exc:
        _refuse(str(exc))


@contextmanager
def _opening(settings: Settings) -> Iterator[None]:
    """The mistakes made starting the control plane, each ended in one line naming the
    setting (exit 2), not a traceback: a database that is not there or not listening,
    a data dir that cannot be written, a signing key that is missing or not a key,
    views ahead of the event log (and what to do), views another process uses."""
    import sqlalchemy.exc
    from eventsourcing.persistence import OperationalError as StoreOperationalError

    from muto.projections import ViewsAhead, ViewsRefused
    from muto.trust.keys import KeyFileError

    try:
        yield
    except ViewsAhead as exc:
        _refuse(f"{exc}: {VIEWS_AHEAD}")
    except ViewsRefused as exc:
        _refuse(str(exc))
    except (sqlalchemy.exc.OperationalError, StoreOperationalError) as exc:
        where = DATABASE_URL if settings.is_postgres else f"{DATA_DIR}: SQLite"
        cause = getattr(exc, "orig", None) or exc.__cause__ or exc
        # psycopg's message spans lines (one per address tried): one line, as said
        said = " ".join(str(cause).split()).removeprefix("connection failed: ")
        _refuse(f"{where}: {said}")
    except (OSError, KeyFileError) as exc:  # the data dir, its keys/
        _refuse(f"{DATA_DIR}: {exc}")


def _open(settings: Settings) -> ControlPlane:
    from muto.cloud.bootstrap import ControlPlane

    with _opening(settings):
        return ControlPlane.open(settings)


def _refuse(line: str) -> NoReturn:
    print(f"muto cloud: {line}", file=sys.stderr)
    raise SystemExit(2)


def _read_settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        data_dir=Path(args.data_dir) if args.data_dir else None,
        database_url=getattr(args, "database_url", None),
        mqtt_url=getattr(args, "mqtt_url", None),
        public_url=getattr(args, "public_url", None),
        release_keys=tuple(Path(p) for p in getattr(args, "release_key", None) or ()) or None,
        release_threshold=getattr(args, "release_threshold", None),
        role=getattr(args, "role", None),
        head_timeout_s=getattr(args, "head_timeout", None),
        keep_alive_s=getattr(args, "keep_alive", None),
        max_connections=getattr(args, "max_connections", None),
        vehicle_rate_per_s=getattr(args, "vehicle_rate", None),
        vehicle_burst=getattr(args, "vehicle_burst", None),
        operator_rate_per_s=getattr(args, "operator_rate", None),
        operator_burst=getattr(args, "operator_burst", None),
    )


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from muto.cloud.api.app import create_app
    from muto.cloud.bootstrap import duties
    from muto.cloud.server import uvicorn_options
    from muto.projections.collector import settle_collector

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    settings = _settings(args)
    if args.no_mqtt:
        settings = replace(settings, mqtt_url=None)
    if args.public_url is None and not os.environ.get("MUTO_PUBLIC_URL"):
        settings = replace(settings, public_url=f"http://{args.host}:{args.port}")
    if args.artifact_dir is not None:
        settings = replace(settings, artifact_dir=Path(args.artifact_dir))
    if args.max_artifact_mb is not None:
        settings = replace(settings, max_artifact_bytes=args.max_artifact_mb << 20)
    if settings.role != "all" and not settings.is_postgres:
        print(
            f"muto cloud serve: --role {settings.role} needs --database-url postgresql+psycopg://"
            " (several processes share one PostgreSQL database); SQLite runs --role all",
            file=sys.stderr,
        )
        return 2
    if args.rebuild_views:
        if settings.role != "all":
            print(
                f"muto cloud serve: --rebuild-views runs in one --role all process, not "
                f"--role {settings.role}: stop every process of the deployment, start one "
                "with --role all --rebuild-views, then the deployment again",
                file=sys.stderr,
            )
            return 2
        settings = replace(settings, rebuild_views=True)
    # SIGTERM: uvicorn stops accepting, finishes in-flight requests, then runs the
    # lifespan shutdown: the notifier flushes, the leases are released. uvicorn then
    # re-raises the signal to the handler it found: ours makes that exit 0, through the
    # close below (the writer drains, the views catch up).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # Opened here, not in uvicorn's lifespan, whose failure is a traceback and exit 3: a
    # start-up mistake is one line naming the setting (_opening).
    plane = _open(settings)
    try:
        if not settings.release_keys:
            # Said by the server, which registers releases; not by `cloud token` or
            # `seed`, which open the same store without the server's flags.
            logging.getLogger("muto.cloud").warning(
                "no release keys configured (--release-key): release signatures are "
                "checked only by the vehicles"
            )
        app = create_app(settings, plane=plane, extensions=duties(settings))
        settle_collector()
        uvicorn.run(
            app,
            host=args.host,
            port=args.port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=10,
            **uvicorn_options(settings),
        )
    finally:
        plane.close()
    return 0


def token(args: argparse.Namespace) -> int:
    from muto.cloud.commands import Cause
    from muto.cloud.errors import NotFound
    from muto.cloud.tokens import Role, issue_token, revoke_token
    from muto.domain.requests import TokenRequest
    from muto.domain.wire import WireError, convert

    cp = _open(_settings(args))
    try:
        cause = Cause.of("cli")
        if args.action == "revoke":
            cp.execute(revoke_token(args.token_id, cause))
            print(f"revoked {args.token_id}")
            return 0
        # The API's rules: the same request Struct (422 there) and a registered vehicle
        # (404 there); `--vehicle ""` is a malformed id, not an operator token.
        role = Role.OPERATOR if args.vehicle is None else Role.VEHICLE
        try:
            convert({"role": role.value, "vehicleId": args.vehicle}, TokenRequest)
            if args.vehicle is not None:
                cp.queries.vehicle(args.vehicle)
        except (WireError, NotFound) as exc:
            field = f" ({exc.path})" if isinstance(exc, WireError) and exc.path else ""
            print(f"refused{field}: {exc}", file=sys.stderr)
            return 2
        secret, command = issue_token(role, args.vehicle, cause)
        token_id = cp.execute(command).value
        print(secret)
        print(
            f"token id {token_id} ({role.value}{' ' + args.vehicle if args.vehicle else ''})",
            file=sys.stderr,
        )
        return 0
    finally:
        cp.close()


def backup(args: argparse.Namespace) -> int:
    from muto.cloud.backup import BackupRefused, back_up

    try:
        copied = back_up(_read_settings(args), Path(args.to))
    except ValueError as exc:  # a setting
        _refuse(str(exc))
    except BackupRefused as exc:
        _refuse(f"backup: {exc}")
    except (OSError, sqlite3.Error) as exc:  # a file unreadable, a disk full: said once
        _refuse(f"backup to {args.to} failed: {exc} (what it wrote there is not a backup)")
    for done in copied:
        print(f"{done.path}  ({done.what})")
    return 0


def reset(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir)
    if not args.yes:
        print(f"refusing to wipe {data_dir} without --yes", file=sys.stderr)
        return 2
    if data_dir.exists():
        shutil.rmtree(data_dir)
    print(f"wiped {data_dir}")
    return 0


def seed(args: argparse.Namespace) -> int:
    from muto.cloud.seed import seed_demo_fleet

    settings = _settings(args)
    with _opening(settings):  # it opens the store itself
        summary = seed_demo_fleet(settings)
    for key, value in summary.items():
        print(f"{key}: {value}")
    return 0


def import_vehicles(args: argparse.Namespace) -> int:
    from muto.cloud.commands import Cause
    from muto.cloud.errors import Conflict, Invalid
    from muto.cloud.fleet_import import BATCH, BadLine, import_vehicles, read_registrations

    cp = _open(_settings(args))
    try:
        registrations = read_registrations(Path(args.file))
        found = import_vehicles(cp, registrations, Cause.of("cli"), args.batch or BATCH)
    except (BadLine, Conflict, Invalid) as exc:  # the chunks before it are stored
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    finally:
        cp.close()
    print(f"registered: {found.registered}")
    print(f"unchanged: {found.unchanged}")
    return 0


def store_arguments(p: argparse.ArgumentParser) -> None:
    """Where the control plane's data is: shared by every command that opens it."""
    p.add_argument("--data-dir", default=None, help="default: data/cloud or MUTO_DATA_DIR")
    p.add_argument(
        "--database-url",
        default=None,
        help="postgresql+psycopg://... (default: SQLite in the data dir)",
    )


def register(sub: Any) -> None:
    cloud = sub.add_parser("cloud", help="the control plane")
    actions = cloud.add_subparsers(dest="action", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        store_arguments(p)
        p.add_argument(
            "--release-key",
            action="append",
            metavar="PUB",
            help="trusted release public key (repeatable)",
        )
        p.add_argument(
            "--release-threshold",
            type=int,
            metavar="K",
            help="distinct release keys that must have signed a release (default 1, "
            "MUTO_RELEASE_THRESHOLD); at least the vehicles' `agent trust --threshold`",
        )

    p = actions.add_parser("serve", help="run the HTTP API and the MQTT bridge")
    common(p)
    p.add_argument("--mqtt-url", default=None, help="default mqtt://127.0.0.1:1883")
    p.add_argument("--no-mqtt", action="store_true", help="HTTP only: no MQTT bridge")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--public-url", default=None, help="URL vehicles use to fetch")
    p.add_argument(
        "--artifact-dir", default=None, help="hosted artifacts (default: DATA_DIR/artifacts)"
    )
    p.add_argument(
        "--max-artifact-mb", type=int, default=None, help="largest artifact accepted (4096)"
    )
    p.add_argument(
        "--role",
        choices=ROLES,
        default=None,
        help="all (default, one process), api (HTTP, any number) or worker (projector, "
        "rollout controller, MQTT; one of them active per duty); or MUTO_ROLE",
    )
    p.add_argument(
        "--head-timeout",
        type=float,
        help="seconds a request's head may take (default 10, MUTO_HEAD_TIMEOUT_S)",
    )
    p.add_argument(
        "--keep-alive",
        type=float,
        help="seconds an idle connection stays open (default 5, MUTO_KEEP_ALIVE_S)",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        help="open connections at most (default 1000, MUTO_MAX_CONNECTIONS)",
    )
    p.add_argument(
        "--rebuild-views",
        action="store_true",
        help="drop every view and the audit chain, and rebuild them from the event log "
        "(after restoring the log from a backup: the server refuses to start while the "
        "views are ahead of it); with --role all, every other process stopped",
    )
    for who, rate, burst in (("vehicle", "5", "50"), ("operator", "0: none", "500")):
        p.add_argument(
            f"--{who}-rate",
            type=float,
            help=f"requests/s per {who} token (default {rate}, MUTO_{who.upper()}_RATE_PER_S)",
        )
        p.add_argument(
            f"--{who}-burst",
            type=int,
            help=f"requests at once per {who} token (default {burst}, MUTO_{who.upper()}_BURST)",
        )
    p.set_defaults(func=serve)

    p = actions.add_parser("token", help="issue or revoke a bearer token")
    common(p)
    p.add_argument("action", choices=["create", "revoke"])
    who = p.add_mutually_exclusive_group()
    who.add_argument("--operator", action="store_true")
    who.add_argument("--vehicle", metavar="VEHICLE_ID")
    p.add_argument("--token-id", help="with revoke")
    p.set_defaults(func=token)

    p = actions.add_parser("seed", help="load a deterministic demo fleet")
    common(p)
    p.set_defaults(func=seed)

    p = actions.add_parser(
        "import-vehicles", help="register a fleet from a JSON Lines file, in atomic batches"
    )
    common(p)
    p.add_argument("file", help="one registration per line, as POST /vehicles takes it")
    p.add_argument("--batch", type=int, default=None, help="registrations per atomic append (1000)")
    p.set_defaults(func=import_vehicles)

    p = actions.add_parser(
        "backup",
        help="copy a SQLite data dir while it serves: views, then events, key, artifacts",
    )
    store_arguments(p)
    p.add_argument("to", metavar="DIR", help="a new or empty directory")
    p.set_defaults(func=backup)

    p = actions.add_parser("reset", help="wipe a data dir")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--yes", action="store_true")
    p.set_defaults(func=reset)
