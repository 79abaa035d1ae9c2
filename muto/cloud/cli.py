"""`muto cloud serve | token | seed | reset`."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from muto.cloud.settings import ROLES, Settings


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        data_dir=Path(args.data_dir) if args.data_dir else None,
        database_url=getattr(args, "database_url", None),
        mqtt_url=getattr(args, "mqtt_url", None),
        public_url=getattr(args, "public_url", None),
        release_keys=tuple(Path(p) for p in getattr(args, "release_key", None) or ()) or None,
        role=getattr(args, "role", None),
    )


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from muto.cloud.api.app import create_app
    from muto.cloud.controller import controller_factory
    from muto.cloud.mqtt import bridge_factory

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        settings = _settings(args)
    except ValueError as exc:  # a bad MUTO_ROLE
        print(f"muto cloud serve: {exc}", file=sys.stderr)
        return 2
    if args.no_mqtt:
        settings = replace(settings, mqtt_url=None)
    if args.public_url is None and not os.environ.get("MUTO_PUBLIC_URL"):
        settings = replace(settings, public_url=f"http://{args.host}:{args.port}")
    if args.artifact_dir is not None:
        settings = replace(settings, artifact_dir=Path(args.artifact_dir))
    if args.max_artifact_mb is not None:
        settings = replace(settings, max_artifact_bytes=args.max_artifact_mb << 20)
    if not settings.release_keys:
        # Said by the server, which registers releases; not by `cloud token` or `seed`,
        # which open the same store without the server's flags.
        logging.getLogger("muto.cloud").warning(
            "no release keys configured (--release-key): release signatures are checked "
            "only by the vehicles"
        )
    if settings.role != "all" and not settings.is_postgres:
        print(
            f"muto cloud serve: --role {settings.role} needs --database-url postgresql+psycopg://"
            " (several processes share one PostgreSQL database); SQLite runs --role all",
            file=sys.stderr,
        )
        return 2
    extensions: list[Any] = []
    if settings.does_duties:  # the worker's duties: each one held by one process at a time
        extensions.append(controller_factory)
        if settings.mqtt_url:
            extensions.append(bridge_factory)
    app = create_app(settings, extensions=extensions)
    # SIGTERM: uvicorn stops accepting, finishes in-flight requests, then runs the
    # lifespan shutdown: the writer drains, the notifier flushes, the views catch up.
    # uvicorn then re-raises the signal to the handler it found: ours makes that exit 0.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    return 0


def token(args: argparse.Namespace) -> int:
    from muto.cloud.bootstrap import ControlPlane
    from muto.cloud.commands import Cause
    from muto.cloud.tokens import Role, issue_token, revoke_token

    cp = ControlPlane.open(_settings(args))
    try:
        cause = Cause.of("cli")
        if args.action == "revoke":
            cp.execute(revoke_token(args.token_id, cause))
            print(f"revoked {args.token_id}")
            return 0
        role = Role.VEHICLE if args.vehicle else Role.OPERATOR
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

    summary = seed_demo_fleet(_settings(args))
    for key, value in summary.items():
        print(f"{key}: {value}")
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

    p = actions.add_parser("reset", help="wipe a data dir")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--yes", action="store_true")
    p.set_defaults(func=reset)
