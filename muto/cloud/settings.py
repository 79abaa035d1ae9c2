"""One settings object for the control plane: flags and MUTO_* environment, read once."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from muto.domain.broker import CLOUD_USER, Broker

MEMORY = "memory://"
# Numeric settings from the environment: variable, field, type.
NUMBERS: tuple[tuple[str, str, type[int] | type[float]], ...] = (
    ("MUTO_HEAD_TIMEOUT_S", "head_timeout_s", float),
    ("MUTO_KEEP_ALIVE_S", "keep_alive_s", float),
    ("MUTO_MAX_CONNECTIONS", "max_connections", int),
    ("MUTO_VEHICLE_RATE_PER_S", "vehicle_rate_per_s", float),
    ("MUTO_VEHICLE_BURST", "vehicle_burst", int),
    ("MUTO_OPERATOR_RATE_PER_S", "operator_rate_per_s", float),
    ("MUTO_OPERATOR_BURST", "operator_burst", int),
    ("MUTO_RELEASE_THRESHOLD", "release_threshold", int),
)
# The least each numeric setting may be, and whether that least is allowed: a head
# deadline of 0 would close every connection at once (and sweep without pause), a burst
# of 0 refuse every request.
BOUNDS: dict[str, tuple[float, bool]] = {
    "head_timeout_s": (0, False),
    "keep_alive_s": (0, False),
    "max_connections": (1, True),
    "vehicle_rate_per_s": (0, True),
    "vehicle_burst": (1, True),
    "operator_rate_per_s": (0, True),
    "operator_burst": (1, True),
    "release_threshold": (1, True),
}
# What `muto cloud serve` runs: `api` (HTTP only, any number of replicas), `worker` (the
# duties one process of a deployment does: projector, rollout controller, MQTT notifier
# and listener, each held by one worker at a time), or `all` (both, one process).
ROLES = ("all", "api", "worker")
# Every environment variable the control plane reads, and the setting it gives.
ENVIRONMENT = {
    "MUTO_DATA_DIR": "data_dir",
    "MUTO_DATABASE_URL": "database_url",
    "MUTO_MQTT_URL": "mqtt_url",
    "MUTO_TENANT": "tenant",
    "MUTO_PUBLIC_URL": "public_url",
    "MUTO_ROLE": "role",
    **{key: name for key, name, _ in NUMBERS},
}


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("data/cloud")
    # None: an SQLite file under data_dir. "memory://": in-memory (tests).
    # "postgresql+psycopg://...": PostgreSQL (scale-out: several API processes).
    database_url: str | None = None
    mqtt_url: str | None = "mqtt://127.0.0.1:1883"
    tenant: str = "default"
    public_url: str = "http://127.0.0.1:8080"
    max_body_bytes: int = 1 << 20
    # Hosted artifacts (PUT /artifacts/{digest}): the largest accepted, and where they
    # are kept (None: data_dir/artifacts; in memory for a memory:// database).
    max_artifact_bytes: int = 4 << 30
    artifact_dir: Path | None = None
    # Bearer tokens required (operator / vehicle). Off only for local experiments.
    auth: bool = True
    desired_state_ttl_sec: int = 30 * 86400
    # Aggregates kept in memory by the event log (about 10 KB each).
    aggregate_cache_size: int = 20_000
    # Public keys (PEM files) of the release process; empty: releases are accepted
    # with their own signatures unchecked by the cloud (vehicles always check).
    release_keys: tuple[Path, ...] = ()
    # How many distinct release keys must have signed a release for it to be registered
    # (k of n, at most the keys; signing.release_keyset checks that). At least the
    # vehicles' own threshold, or the cloud registers releases they will reject.
    release_threshold: int = 1
    role: str = "all"
    # Connections (muto/cloud/server.py): a request's head must arrive within
    # head_timeout_s, an idle keep-alive connection is closed after keep_alive_s, and
    # at most max_connections are open at once.
    head_timeout_s: float = 10.0
    keep_alive_s: float = 5.0
    max_connections: int = 1000
    # Requests a second (sustained; 0: no limit) and at once, per bearer token
    # (muto/cloud/ratelimit.py). A vehicle polls every 30 s and reports a few times a
    # pass; operators' scripts are trusted by default.
    vehicle_rate_per_s: float = 5.0
    vehicle_burst: int = 50
    operator_rate_per_s: float = 0.0
    operator_burst: int = 500
    # Drop every view (the audit chain too) at open and rebuild them from the log:
    # `muto cloud serve --rebuild-views`, the operator's word that the event log was
    # restored from a backup. A flag for one start, never read from the environment.
    rebuild_views: bool = False
    extra_env: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if environ is None else environ
        found: dict[str, Any] = {
            name: env[key] for key, name in ENVIRONMENT.items() if env.get(key)
        }
        if "data_dir" in found:
            found["data_dir"] = Path(found["data_dir"])
        for key, name, kind in NUMBERS:
            if env.get(key):
                try:
                    found[name] = kind(env[key])
                except ValueError:
                    raise ValueError(f"{key} must be a number, not {env[key]!r}") from None
        found.update({k: v for k, v in overrides.items() if v is not None})
        settings = replace(cls(), **found)
        if settings.role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {settings.role!r}")
        check_database_url(settings.database_url)
        for name, (least, allowed) in BOUNDS.items():
            value = getattr(settings, name)
            if not math.isfinite(value):  # NaN passes every comparison below unnoticed
                raise ValueError(f"{named(name)} must be a finite number, not {value}")
            if value < least or (value == least and not allowed):
                bound = f"at least {least}" if allowed else f"more than {least}"
                raise ValueError(f"{named(name)} must be {bound}, not {value}")
        return settings

    @property
    def broker_users(self) -> frozenset[str]:
        """The cloud's broker user names, which no vehicle may be registered under: the
        shipped ACL's, also known to API replicas that have no MQTT URL, and the user in
        this process's URL (a malformed URL is the bridge's to report)."""
        try:
            user = Broker.parse(self.mqtt_url).username if self.mqtt_url else None
        except ValueError:
            user = None
        return frozenset({CLOUD_USER} | ({user} if user else set()))

    @property
    def serves_api(self) -> bool:
        return self.role in ("all", "api")

    @property
    def does_duties(self) -> bool:
        return self.role in ("all", "worker")

    @property
    def is_memory(self) -> bool:
        return self.database_url == MEMORY

    @property
    def is_postgres(self) -> bool:
        return bool(self.database_url and self.database_url.startswith("postgresql"))

    @property
    def events_url(self) -> str:
        if self.database_url and not self.is_memory:
            return bounded_link(self.database_url)
        return f"sqlite:///{self.data_dir / 'events.db'}"

    @property
    def views_url(self) -> str:
        """Read models live beside the events on PostgreSQL; on SQLite in their own file,
        so view writers never contend with the event writer for the file lock."""
        if self.is_memory:
            return "sqlite:///:memory:"
        if self.is_postgres:
            assert self.database_url is not None
            return bounded_link(self.database_url)
        return f"sqlite:///{self.data_dir / 'views.db'}"

    def sqlite_files(self) -> list[Path]:
        """The SQLite database files this configuration keeps (none in memory or on
        PostgreSQL)."""
        if self.is_memory:
            return []
        urls = {self.events_url, self.views_url}
        return sorted(
            sqlite_path(url)
            for url in urls
            if url.startswith("sqlite:///") and url != "sqlite:///:memory:"
        )

    def event_store_env(self) -> dict[str, str]:
        if self.is_memory:
            return {"PERSISTENCE_MODULE": "eventsourcing.popo", **self.extra_env}
        return {
            "PERSISTENCE_MODULE": "muto.cloud.recorder:Factory",
            "SQLALCHEMY_URL": self.events_url,
            "CREATE_TABLE": "y",
            **self.extra_env,
        }


def sqlite_path(url: str) -> Path:
    """The file of a `sqlite:///PATH[?...]` URL (as the settings build them)."""
    return Path(url.removeprefix("sqlite:///").partition("?")[0])


# libpq's own bounds on a PostgreSQL connection, so that a replica cut off from the
# database (a partition: no FIN, no RST) fails its requests with 503 `unavailable` in
# seconds instead of holding them until the kernel gives up (~15 minutes): a new
# connection waits at most 5 s; a request sent and not acknowledged for 10 s, or an
# idle wait for an answer whose peer stops answering keepalive probes (5 s idle, then
# 3 probes 2 s apart), breaks the connection. A live server answers probes even while
# a long query runs. Parameters the operator put in the URL win.
DATABASE_LINK = {
    "connect_timeout": "5",
    "keepalives": "1",
    "keepalives_idle": "5",
    "keepalives_interval": "2",
    "keepalives_count": "3",
    "tcp_user_timeout": "10000",  # ms
}


def bounded_link(url: str) -> str:
    """A PostgreSQL URL with `DATABASE_LINK`'s bounds added; any other URL as it is."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        return url
    added = {k: v for k, v in DATABASE_LINK.items() if k not in parsed.query}
    return parsed.update_query_dict(added).render_as_string(hide_password=False)


DATABASE_URL = "database_url (--database-url, MUTO_DATABASE_URL)"


def check_database_url(url: str | None) -> None:
    """ValueError naming the setting for a URL the control plane cannot open, before
    anything is: PostgreSQL is `postgresql+psycopg://` (SQLAlchemy reads a bare
    `postgresql://` as psycopg2, which muto does not ship, and has no `postgres://`).
    The message shows the scheme only: the URL may hold a password."""
    if url is None or url == MEMORY:
        return
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        driver = make_url(url).drivername
    except (ArgumentError, ValueError) as exc:  # neither message repeats the URL
        raise ValueError(f"{DATABASE_URL} is not a database URL: {exc}") from None
    if driver in ("postgresql+psycopg", "sqlite"):
        return
    if driver.startswith("postgres"):
        raise ValueError(f"{DATABASE_URL}: use postgresql+psycopg://, not {driver}://")
    raise ValueError(
        f"{DATABASE_URL} must be postgresql+psycopg://USER@HOST:PORT/DATABASE (or unset: "
        f"SQLite in the data dir), not {driver}://"
    )


def named(name: str) -> str:
    """A numeric setting as an operator sets it: field (--flag, MUTO_ variable)."""
    flag = name.removesuffix("_per_s").removesuffix("_s").replace("_", "-")
    variable = next(key for key, field_name, _ in NUMBERS if field_name == name)
    return f"{name} (--{flag}, {variable})"
