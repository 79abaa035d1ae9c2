"""One settings object for the control plane: flags and MUTO_* environment, read once."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

MEMORY = "memory://"
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
    role: str = "all"
    extra_env: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if environ is None else environ
        found: dict[str, Any] = {
            name: env[key] for key, name in ENVIRONMENT.items() if env.get(key)
        }
        if "data_dir" in found:
            found["data_dir"] = Path(found["data_dir"])
        found.update({k: v for k, v in overrides.items() if v is not None})
        settings = replace(cls(), **found)
        if settings.role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {settings.role!r}")
        return settings

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
            return self.database_url
        return f"sqlite:///{self.data_dir / 'events.db'}"

    @property
    def views_url(self) -> str:
        """Read models live beside the events on PostgreSQL; on SQLite in their own file,
        so view writers never contend with the event writer for the file lock."""
        if self.is_memory:
            return "sqlite:///:memory:"
        if self.is_postgres:
            assert self.database_url is not None
            return self.database_url
        return f"sqlite:///{self.data_dir / 'views.db'}"

    def sqlite_files(self) -> list[Path]:
        """The SQLite database files this configuration keeps (none in memory or on
        PostgreSQL)."""
        if self.is_memory:
            return []
        urls = {self.events_url, self.views_url}
        return sorted(
            Path(url.removeprefix("sqlite:///").partition("?")[0])
            for url in urls
            if url.startswith("sqlite:///") and url != "sqlite:///:memory:"
        )

    def event_store_env(self) -> dict[str, str]:
        if self.is_memory:
            return {"PERSISTENCE_MODULE": "eventsourcing.popo", **self.extra_env}
        return {
            "PERSISTENCE_MODULE": "eventsourcing_sqlalchemy",
            "SQLALCHEMY_URL": self.events_url,
            "CREATE_TABLE": "y",
            **self.extra_env,
        }
