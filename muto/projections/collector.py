"""The garbage collector's settings for a muto process that projects the log or holds
the fleet in memory: the server, an audit replay, a simulator slice."""

from __future__ import annotations

import gc

# Allocations (net) before a young collection; CPython's default is 700.
YOUNG_COLLECTION = 10_000


def settle_collector() -> None:
    """Set the garbage collector up before the process's bulk work starts: the server
    (aggregates, tokens, ETags, health statuses) before it serves, an audit replay before
    it rebuilds the views, a simulator slice (2,500 agents) once its agents are up.

    With CPython's defaults, objects still in use by work in flight (reports, futures,
    a projector's batch of 2,000 events and their rows) outlived two young collections,
    were moved to the oldest generation and died there, and that pace of promotions made
    the collector scan the whole heap again and again: in the server at 20,000 vehicles a
    full collection took ~300 ms, 37 of them in a 3-minute bench, the tail of every
    request (p99 ~300 ms) and a fifth of the reconcile path's CPU; a simulator slice of
    1,000 agents spent 9 s in the collector (pauses of 0.5 s); a projection catch-up of
    24,000 events spent a sixth of its time there. A young generation of
    YOUNG_COLLECTION objects lets them die young (docs/performance.md). What is alive
    now (modules, classes, the app; a slice's agents) is frozen: no collection scans it
    again, and it is still freed when its last reference goes. Cyclic garbage is
    collected, only later; a cycle frozen here is kept for good (what was in flight at
    this instant)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION, 10, 10)
