"""The agent's artifact cache: content-addressed, budgeted, pinned."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from weakref import WeakValueDictionary

from muto.agent.cache.download import Timeouts, fetch
from muto.agent.cache.eviction import Evictable, Room, plan_evictions
from muto.agent.cache.layout import Layout, StoredFile, UseClock, commit, digest_of, hex_of
from muto.agent.transport.exchange import Exchanges, exchanges_of
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.domain.release import Artifact
from muto.trust.artifacts import verify_file

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger("muto.agent.cache")


@dataclass(frozen=True)
class CacheEntry:
    digest: str
    size: int
    last_used: float  # seconds since the epoch (the file's mtime)
    pinned: bool
    complete: bool  # False for a partial download kept for resuming


class EvictionRefused(Exception):
    """`evict` was asked to remove a pinned artifact or one an ensure is working on."""


class ArtifactCache:
    """Artifacts by sha256 under `root`, within `budget_bytes`.

    Invariants:
    - A blob at `sha256/<hex>` got there by atomic rename of a fsynced file whose size and
      digest matched the signed artifact; every hit is re-verified, and a corrupted blob is
      logged (a warning naming it, what was expected and what was found), deleted and
      fetched again.
    - Bytes on disk (blobs and partials) stay within the budget: room is made for the
      declared size before a byte is written, a download in flight is charged its declared
      size, and a partial never grows past it.
    - Pinned digests (blob or partial) are never evicted. When evicting every unpinned
      file would still not make room, `ensure` raises INSUFFICIENT_DISK and evicts
      nothing (for free disk, judged by `free_disk()` plus the bytes eviction would free).
    - Eviction is least-recently-used first; a use is an `ensure` (hit or download).
    - One `ensure` per digest at a time (an asyncio lock per digest), and a digest an
      `ensure` is working on is never evicted. One process per root: the locks do not
      reach across processes.

    Pin the artifacts of the running release and of its rollback target, and of the
    release being fetched, or fetching its second artifact may evict its first.
    """

    def __init__(
        self,
        root: Path,
        budget_bytes: int,
        *,
        client: httpx.AsyncClient | Exchanges | None = None,
        read_timeout_s: float = 30,
        total_timeout_s: float = 600,
        free_disk: Callable[[], int] | None = None,
    ) -> None:
        if budget_bytes < 0:
            raise ValueError("budget_bytes must be >= 0")
        self.budget_bytes = budget_bytes
        self._layout = Layout(root)
        self._client = client  # None: a client of our own for each download
        self._timeouts = Timeouts(read_s=read_timeout_s, total_s=total_timeout_s)
        self._free_disk = free_disk
        self._pinned = self._layout.load_pins()
        self._locks: WeakValueDictionary[str, asyncio.Lock] = WeakValueDictionary()
        self._busy: set[str] = set()  # digests (hex) an ensure is working on
        self._reserved: dict[str, int] = {}  # hex -> declared size, while downloading
        self._clock = UseClock(max((f.mtime_ns for f in self._layout.scan()), default=0))

    @property
    def root(self) -> Path:
        return self._layout.root

    async def ensure(
        self, artifact: Artifact, url: str, headers: Mapping[str, str] | None = None
    ) -> Path:
        """The path of the verified blob of `artifact`, downloading it from `url` if needed.
        `headers` (a bearer token, say) go with every request. Raises ReasonError:
        ARTIFACT_DOWNLOAD_FAILED, or INSUFFICIENT_DISK when no room can be made."""
        key = hex_of(artifact.digest)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            self._busy.add(key)
            try:
                return await self._ensure(key, artifact, url, headers or {})
            finally:
                self._busy.discard(key)
                self._reserved.pop(key, None)

    def pin(self, digests: Iterable[str]) -> None:
        """Replace the pinned set (persisted; it survives a restart)."""
        pinned = frozenset(hex_of(d) for d in digests)
        self._layout.save_pins(pinned)
        self._pinned = pinned

    def pinned(self) -> frozenset[str]:
        return frozenset(digest_of(h) for h in self._pinned)

    def path_for(self, digest: str) -> Path | None:
        """The blob's path if present (not re-verified, and not counted as a use)."""
        blob = self._layout.blob(hex_of(digest))
        return blob if blob.is_file() else None

    def has(self, digest: str) -> bool:
        return self.path_for(digest) is not None

    def evict(self, digest: str) -> bool:
        """Remove the blob and any partial of `digest`; True if anything was there."""
        key = hex_of(digest)
        if key in self._pinned:
            raise EvictionRefused(f"{digest} is pinned")
        if key in self._busy:
            raise EvictionRefused(f"{digest} is being fetched")
        return self._layout.delete(key)

    def evict_unpinned(self) -> list[str]:
        """Remove every blob and partial that is neither pinned nor being fetched: the
        runtime found the disk full putting a release in place, and what the cache keeps
        only in case goes first. The digests removed, least recently used first."""
        protected = self._pinned | self._busy
        gone: list[str] = []
        for entry in self.entries():
            key = hex_of(entry.digest)
            if key not in protected and self._layout.delete(key):
                gone.append(entry.digest)
        return gone

    def usage(self) -> int:
        """Bytes on disk: blobs and partial downloads."""
        return sum(f.size for f in self._layout.scan())

    def entries(self) -> list[CacheEntry]:
        """Everything on disk, least recently used first."""
        files = sorted(self._layout.scan(), key=lambda f: (f.mtime_ns, f.hex))
        pinned = self._pinned
        return [
            CacheEntry(digest_of(f.hex), f.size, f.mtime_ns / 1e9, f.hex in pinned, f.complete)
            for f in files
        ]

    async def _ensure(
        self, key: str, artifact: Artifact, url: str, headers: Mapping[str, str]
    ) -> Path:
        blob = self._layout.blob(key)
        if blob.is_file():
            try:
                await asyncio.to_thread(verify_file, blob, artifact)
                self._clock.touch(blob)
                return blob
            except ReasonError as exc:
                # Damaged on disk (storage going bad, a hand edit): leave a trace, refetch.
                logger.warning(
                    "cached %s at %s is damaged (%s): deleted, fetching it again",
                    artifact.digest,
                    blob,
                    exc.detail,
                )
                blob.unlink(missing_ok=True)
        self._make_room(key, artifact.size)
        partial = self._layout.partial(key)
        http = exchanges_of(self._client, self._timeouts.read_s)
        try:
            await fetch(http, url, headers, artifact, partial, self._timeouts)
        finally:
            if self._client is None:
                await http.aclose()
        await asyncio.to_thread(commit, partial, blob)
        self._clock.touch(blob)
        return blob

    def _make_room(self, key: str, size: int) -> None:
        """Evict until `size` bytes for `key` fit, then reserve them. Synchronous on
        purpose: no other coroutine can change the books between the sum and the reserve."""
        while True:
            files = self._layout.scan()
            room = self._room(key, size, files)
            plan = plan_evictions(room, self._evictable(files))
            if plan is None:
                raise ReasonError(
                    ReasonCode.INSUFFICIENT_DISK,
                    f"{digest_of(key)}: {size} bytes do not fit in a budget of "
                    f"{self.budget_bytes} ({room.used} in use, pinned or in flight)"
                    + ("" if room.free is None else f", {room.free} bytes free on disk"),
                )
            if not plan:
                break
            for victim in plan:
                Path(victim.key).unlink(missing_ok=True)
        self._reserved[key] = size

    def _room(self, key: str, size: int, files: list[StoredFile]) -> Room:
        # A download in flight is charged its declared size, not its bytes so far.
        on_disk = {f.hex: 0 for f in files}
        for f in files:
            on_disk[f.hex] += f.size
        settled = sum(n for h, n in on_disk.items() if h not in self._reserved)
        own = on_disk.get(key, 0)  # a partial to resume from
        pending = sum(n - on_disk.get(h, 0) for h, n in self._reserved.items())
        return Room(
            used=settled + sum(self._reserved.values()),
            budget=self.budget_bytes,
            need=size - own,
            free=None if self._free_disk is None else self._free_disk(),
            to_write=size - own + pending,
        )

    def _evictable(self, files: list[StoredFile]) -> list[Evictable]:
        protected = self._pinned | self._busy
        return [Evictable(str(f.path), f.size, f.mtime_ns) for f in files if f.hex not in protected]


def cache_of(source: object) -> ArtifactCache | None:
    """The ArtifactCache behind an artifact source (its `cache`), if it has one: the
    simulated source keeps no files."""
    cache = getattr(source, "cache", None)
    return cache if isinstance(cache, ArtifactCache) else None
