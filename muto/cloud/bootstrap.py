"""Composition root: wires the event log, writer, views, projector and signer from
one Settings object. The API, the MQTT bridge, the CLI and the tests all start here."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from muto.cloud.eventlog import EventLog
from muto.cloud.queries import Queries
from muto.cloud.settings import Settings
from muto.cloud.tokens import Authenticator
from muto.cloud.writer import Command, Writer, Written
from muto.domain.desired import DesiredStateDocument, Envelope
from muto.projections import Views
from muto.projections.runner import ProjectionRunner
from muto.projections.store import ViewStore
from muto.trust.desired_state import sign_desired_state
from muto.trust.keys import Signer, write_key_pair

T = TypeVar("T")
CONTROL_PLANE_KEY = "control-plane.key"


def control_plane_signer(settings: Settings) -> Signer:
    """The key that signs desired-state documents: kept in the data dir, created once.
    Vehicles trust its public half (keys/control-plane.pub)."""
    if settings.is_memory:
        return Signer.generate()
    keys = settings.data_dir / "keys"
    private = keys / CONTROL_PLANE_KEY
    if not private.exists():
        keys.mkdir(parents=True, exist_ok=True)
        write_key_pair(Signer.generate(), private, keys / "control-plane.pub")
    return Signer.load(private)


@dataclass
class ControlPlane:
    settings: Settings
    log: EventLog
    writer: Writer
    views: Views
    projector: ProjectionRunner
    queries: Queries
    auth: Authenticator
    signer: Signer

    @classmethod
    def open(cls, settings: Settings) -> ControlPlane:
        log = EventLog.open(settings)
        views = Views(ViewStore(settings.views_url))
        projector = ProjectionRunner(log, views.store, views.all)
        projector.catch_up()
        return cls(
            settings,
            log,
            Writer(log),
            views,
            projector,
            Queries(views),
            Authenticator(views),
            control_plane_signer(settings),
        )

    def sign(self, document: DesiredStateDocument) -> Envelope:
        return sign_desired_state(document, self.signer)

    @property
    def public_key_path(self) -> Path:
        return self.settings.data_dir / "keys" / "control-plane.pub"

    def execute(self, command: Command[T]) -> Written[T]:
        """Write, then wait until the views show it (read-your-writes)."""
        written = self.writer.execute(command)
        self.projector.catch_up_to(written.position)
        return written

    async def write(self, command: Command[T]) -> Written[T]:
        written = await self.writer.run(command)
        if written.position is not None:
            await asyncio.to_thread(self.projector.catch_up_to, written.position)
        return written

    def close(self) -> None:
        self.projector.stop()
        self.writer.close()
        self.projector.catch_up()
        self.views.store.close()
        self.log.close()
