"""Read models built from the event log, each with its own tracked position."""

from __future__ import annotations

from muto.projections.audit import AuditTimeline
from muto.projections.base import Projection
from muto.projections.chain import HashChain
from muto.projections.desired import LatestDesired
from muto.projections.inventory import Inventory
from muto.projections.releases import Releases
from muto.projections.rollouts import RolloutProgress
from muto.projections.store import ViewStore
from muto.projections.tokens import Tokens


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
