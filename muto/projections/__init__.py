"""Read models built from the event log, each with its own tracked position."""

from __future__ import annotations

import logging

from sqlalchemy import inspect

from muto.projections.audit import AuditTimeline
from muto.projections.base import Projection
from muto.projections.chain import HashChain
from muto.projections.desired import LatestDesired
from muto.projections.inventory import Inventory
from muto.projections.releases import Releases
from muto.projections.rollouts import RolloutProgress
from muto.projections.source import EventSource
from muto.projections.store import ViewsAhead, ViewsInUse, ViewsRefused, ViewStore
from muto.projections.tokens import Tokens

__all__ = ["Views", "ViewsAhead", "ViewsInUse", "ViewsRefused"]
logger = logging.getLogger("muto.projections")


class Views:
    """Every read model of the control plane, defined on one view store."""

    def __init__(self, store: ViewStore) -> None:
        self.store = store
        self.inventory = Inventory(store.metadata)
        self.releases = Releases(store.metadata)
        self.desired = LatestDesired(store.metadata)
        self.rollouts = RolloutProgress(store.metadata)
        self.audit = AuditTimeline(store.metadata)
        self.tokens = Tokens(store.metadata)
        self.chain = HashChain(store.metadata)

    def start(self) -> list[str]:
        """Create missing tables and drop views whose stored shape or meaning (a
        projection's `version`) changed (catch-up rebuilds them); returns their names."""
        self.store.create_table()
        return self.store.reshape(self.all)

    def refuse_ahead_of(self, log: EventSource) -> None:
        """ViewsAhead when the views have taken in positions past the log's end. Views
        read only what the log had committed, and a log's end only moves forward, so
        reading theirs first and the log's end after never mistakes a log that is
        being written (by another process) for one that lost events."""
        applied = self.furthest_applied()
        head = log.position()
        if applied > head:
            raise ViewsAhead(applied, head)

    def furthest_applied(self) -> int:
        """The furthest log position the views have taken in: every tracked position
        (each view's, the MQTT notifier's) and the audit chain's last link, which says
        it too should its position be gone; 0 for a new store."""
        with self.store.reading() as session:
            tracked = self.store.furthest_tracked(session)
            links = inspect(session.connection()).has_table(self.chain.links.name)
            chained = self.chain.head(session)[0] if links else 0
        return max(tracked, chained)

    def drop_all(self) -> None:
        """Drop every view, the audit chain with them, and every stored position (the
        operator's call, after restoring the event log from a backup): catch-up then
        rebuilds them from the log as it stands. ViewsInUse on PostgreSQL while another
        process uses them."""
        self.store.create_table()
        self.store.drop_views(self.all)
        logger.warning(
            "dropped every view, the audit chain and every stored position: catch-up "
            "rebuilds them from the event log as it stands (the chain then attests the "
            "log from here on, not before)"
        )

    @property
    def all(self) -> list[Projection]:
        return [
            self.inventory,
            self.releases,
            self.desired,
            self.rollouts,
            self.audit,
            self.tokens,
            self.chain,
        ]
