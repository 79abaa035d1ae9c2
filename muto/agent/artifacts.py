"""ArtifactSource: how the agent gets a release's files. The real one is the artifact cache
over HTTP; the simulated one touches nothing (the fleet simulator's agents share a host)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import urljoin, urlsplit

from muto.agent.cache import ArtifactCache
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.domain.release import Artifact


@dataclass(frozen=True)
class Fetched:
    path: Path
    downloaded: bool  # False: it was in the cache already (and re-verified)
    evicted: tuple[str, ...] = ()  # digests removed to make room for it


class ArtifactSource(Protocol):
    def present(self, digests: Iterable[str]) -> frozenset[str]:
        """Which of `digests` are in the cache now (cheap: no hashing)."""
        ...

    async def ensure(self, artifact: Artifact) -> Fetched:
        """The verified file; ReasonError ARTIFACT_DOWNLOAD_FAILED or INSUFFICIENT_DISK."""
        ...

    def pin(self, digests: Iterable[str]) -> None:
        """Keep exactly these from eviction (replaces the previous set)."""
        ...


class CachedArtifacts:
    """The ArtifactCache, with artifact refs turned into URLs: an absolute http(s) ref is
    used as is, a relative one is resolved against `base_url`. The bearer token goes only
    to `token_origin` (the cloud's URL): same scheme, host and port, never to a
    third-party artifact server nor over plain http to the cloud's https host and port."""

    def __init__(
        self,
        cache: ArtifactCache,
        *,
        base_url: str | None = None,
        token: str | None = None,
        token_origin: str | None = None,
    ) -> None:
        self.cache = cache
        self.base_url = base_url
        self._token = token
        self._token_origin = origin(token_origin) if token_origin else None

    def url_of(self, artifact: Artifact) -> str:
        if urlsplit(artifact.ref).scheme in ("http", "https") or self.base_url is None:
            return artifact.ref
        return urljoin(self.base_url, artifact.ref)

    def present(self, digests: Iterable[str]) -> frozenset[str]:
        return frozenset(d for d in digests if self.cache.has(d))

    async def ensure(self, artifact: Artifact) -> Fetched:
        url = self.url_of(artifact)
        if self.cache.has(artifact.digest):
            return Fetched(await self.cache.ensure(artifact, url, self.headers_for(url)), False)
        before = {e.digest for e in self.cache.entries()}
        path = await self.cache.ensure(artifact, url, self.headers_for(url))
        after = {e.digest for e in self.cache.entries()}
        return Fetched(path, downloaded=True, evicted=tuple(sorted(before - after)))

    def pin(self, digests: Iterable[str]) -> None:
        wanted = frozenset(digests)
        if wanted != self.cache.pinned():
            self.cache.pin(wanted)

    def headers_for(self, url: str) -> dict[str, str]:
        if self._token and self._token_origin and origin(url) == self._token_origin:
            return {"Authorization": f"Bearer {self._token}"}
        return {}


DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(url: str) -> tuple[str, str, int | None] | None:
    """(scheme, host, port) of an http(s) URL, the default port filled in; None for
    anything else (no token goes there)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a port that is not a number
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port if port is not None else DEFAULT_PORTS[scheme]


@dataclass
class SimulatedArtifacts:
    """Everything is cached unless listed in `missing` (then a download takes
    `download_sec`); digests in `failing` fail to download."""

    missing: set[str] = field(default_factory=set)
    failing: set[str] = field(default_factory=set)
    download_sec: float = 0.0
    pinned: frozenset[str] = frozenset()

    def present(self, digests: Iterable[str]) -> frozenset[str]:
        return frozenset(d for d in digests if d not in self.missing)

    async def ensure(self, artifact: Artifact) -> Fetched:
        path = Path("/simulated") / artifact.digest.removeprefix("sha256:")
        if artifact.digest in self.failing:
            raise ReasonError(ReasonCode.ARTIFACT_DOWNLOAD_FAILED, f"{artifact.ref}: simulated")
        if artifact.digest not in self.missing:
            return Fetched(path, downloaded=False)
        await asyncio.sleep(self.download_sec)
        self.missing.discard(artifact.digest)
        return Fetched(path, downloaded=True)

    def pin(self, digests: Iterable[str]) -> None:
        self.pinned = frozenset(digests)
