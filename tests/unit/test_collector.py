"""The server, an audit replay and a simulator slice settle the garbage collector before
their bulk work (muto/projections/collector.py says why): start-up frozen, a larger young
generation, cyclic garbage still collected."""

from __future__ import annotations

import gc
import weakref

from muto.projections.collector import YOUNG_COLLECTION, settle_collector


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


def test_start_up_is_frozen_and_young_collections_wait_for_more_allocations() -> None:
    before = gc.get_threshold()
    try:
        settle_collector()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (YOUNG_COLLECTION, 10, 10)
        node = Node()
        gone = weakref.ref(node)
        del node
        kept = [[] for _ in range(YOUNG_COLLECTION // 2)]  # fewer than a collection needs
        assert gone() is not None
        kept += [[] for _ in range(2 * YOUNG_COLLECTION)]  # a young collection ran meanwhile
        assert gone() is None
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
