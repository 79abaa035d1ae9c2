"""The ETag memory: each vehicle's current desired-state ETag, so that a poll whose
`If-None-Match` names it is answered 304 without a query.

Exact, not timed: an entry is evicted when a new assignment for its vehicle commits
(the desired projection's announcer, in this process; on PostgreSQL also heard from
other processes through cloud.invalidation), and the memory answers nothing while this
process may be missing such changes (`live()` False). An ETag read before an
assignment committed is never remembered after that assignment's eviction: the reader
takes `generation()` before its query and hands it to `remember`. From just before the
commit until that eviction the vehicle is held (`changing`): nothing is answered or
remembered for it, so a vehicle woken by the notify that the commit allows never meets
its old ETag here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

MAX_VEHICLES = 2_000_000  # beyond that the memory starts again (a bound, not a policy)


class DesiredEtags:
    def __init__(self, live: Callable[[], bool]) -> None:
        self.live = live
        self._etags: dict[str, str] = {}
        self._forgets = 0  # bumped by every eviction: see `generation`
        self._changing: set[str] = set()  # vehicles held: see `changing`
        self._lock = threading.Lock()  # evictions come from the projector's thread

    def recent(self, vehicle_id: str) -> str | None:
        """The vehicle's current ETag, if remembered (None: ask the view)."""
        return self._etags.get(vehicle_id) if self.live() else None

    def generation(self) -> int:
        """Read before a poll's query and hand to `remember`."""
        return self._forgets

    def remember(self, vehicle_id: str, etag: str, generation: int) -> None:
        with self._lock:
            if generation != self._forgets or vehicle_id in self._changing:
                return  # an assignment committed meanwhile: this ETag may be the old one
            if len(self._etags) >= MAX_VEHICLES:
                self._etags.clear()
            self._etags[vehicle_id] = etag

    def changing(self, vehicle_id: str) -> None:
        """A new assignment for this vehicle is about to commit: hold it until `forget`."""
        with self._lock:
            self._forgets += 1
            self._changing.add(vehicle_id)
            self._etags.pop(vehicle_id, None)

    def forget(self, vehicle_id: str) -> None:
        """A new assignment for this vehicle committed (or the batch holding it failed)."""
        with self._lock:
            self._forgets += 1
            self._etags.pop(vehicle_id, None)
            self._changing.discard(vehicle_id)

    def clear(self) -> None:
        """Changes may have been missed (the change channel reconnected)."""
        with self._lock:
            self._forgets += 1
            self._etags.clear()

    def __len__(self) -> int:
        return len(self._etags)
