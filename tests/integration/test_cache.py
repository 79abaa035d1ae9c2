"""The artifact cache against a real HTTP server on 127.0.0.1 and a real filesystem."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import tempfile
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from muto.agent.cache import ArtifactCache, EvictionRefused
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.domain.release import Artifact, ArtifactType
from muto.trust.artifacts import CHUNK
from tests.support.artifact_server import ArtifactServer, Faults

T = TypeVar("T")
FAILED = ReasonCode.ARTIFACT_DOWNLOAD_FAILED


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def blob_of(data: bytes, name: str = "a") -> Artifact:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    return Artifact(type=ArtifactType.FILE, ref=name, digest=digest, size=len(data))


def payload(seed: int, size: int) -> bytes:
    return hashlib.sha256(str(seed).encode()).digest() * (size // 32) + bytes(size % 32)


def partial_of(root: Path, artifact: Artifact) -> Path:
    return root / "partial" / (artifact.digest.removeprefix("sha256:") + ".part")


def failure(coro: Coroutine[Any, Any, Path]) -> ReasonError:
    with pytest.raises(ReasonError) as caught:
        run(coro)
    return caught.value


@pytest.fixture
def server() -> Iterator[ArtifactServer]:
    with ArtifactServer() as s:
        yield s


class Published:
    """Blobs put on the test server, by name."""

    def __init__(self, server: ArtifactServer) -> None:
        self.server = server

    def __call__(self, name: str, data: bytes) -> tuple[Artifact, str]:
        return blob_of(data, name), self.server.put(f"/{name}", data)


@pytest.fixture
def publish(server: ArtifactServer) -> Published:
    return Published(server)


class CountingTransport(httpx.AsyncBaseTransport):
    """Counts the response body bytes the client actually read."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.body_bytes = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        assert isinstance(response.stream, httpx.AsyncByteStream)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_Counted(response.stream, self),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self.inner.aclose()


class _Counted(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, counter: CountingTransport) -> None:
        self.inner, self.counter = inner, counter

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.inner:
            self.counter.body_bytes += len(chunk)
            yield chunk

    async def aclose(self) -> None:
        await self.inner.aclose()


def test_download_then_hit_without_a_request(tmp_path: Path, server: ArtifactServer) -> None:
    data = payload(1, 200_000)
    artifact, url = Published(server)("a", data)
    cache = ArtifactCache(tmp_path, 1_000_000)

    path = run(cache.ensure(artifact, url))
    again = run(cache.ensure(artifact, url))

    assert path == again == tmp_path / "sha256" / artifact.digest.removeprefix("sha256:")
    assert path.read_bytes() == data
    assert len(server.requests_for("/a")) == 1
    assert cache.has(artifact.digest) and cache.path_for(artifact.digest) == path
    [entry] = cache.entries()
    assert (entry.digest, entry.size, entry.complete, entry.pinned) == (
        artifact.digest,
        len(data),
        True,
        False,
    )
    assert cache.usage() == len(data)


def test_bearer_token_is_passed_through(tmp_path: Path, server: ArtifactServer) -> None:
    artifact, url = Published(server)("a", payload(1, 5000))
    server.faults = Faults(bearer_token="s3cret")
    cache = ArtifactCache(tmp_path, 100_000)

    refused = failure(cache.ensure(artifact, url))
    path = run(cache.ensure(artifact, url, {"Authorization": "Bearer s3cret"}))

    assert refused.code == FAILED and "401" in refused.detail
    assert "s3cret" not in refused.detail
    assert path.read_bytes() == payload(1, 5000)


def test_resume_after_truncation_asks_for_the_rest(tmp_path: Path, publish: Published) -> None:
    data = payload(2, 300_000)
    artifact, url = publish("a", data)
    publish.server.faults = Faults(truncate_after=100_000)
    cache = ArtifactCache(tmp_path, 1_000_000)

    assert failure(cache.ensure(artifact, url)).code == FAILED
    held = partial_of(tmp_path, artifact).stat().st_size
    assert 0 < held <= 100_000 and not cache.has(artifact.digest)

    publish.server.faults = Faults()
    path = run(cache.ensure(artifact, url))

    first, second = publish.server.requests_for("/a")
    assert second.range == f"bytes={held}-" and second.status == 206
    assert first.range is None and first.bytes_sent == 100_000
    assert second.bytes_sent == len(data) - held < len(data)
    assert path.read_bytes() == data
    assert not partial_of(tmp_path, artifact).exists()


def test_server_ignoring_range_still_ends_correct(tmp_path: Path, publish: Published) -> None:
    data = payload(3, 300_000)
    artifact, url = publish("a", data)
    publish.server.faults = Faults(truncate_after=120_000)
    cache = ArtifactCache(tmp_path, 1_000_000)
    failure(cache.ensure(artifact, url))

    publish.server.faults = Faults(ignore_range=True)
    path = run(cache.ensure(artifact, url))

    last = publish.server.requests_for("/a")[-1]
    assert last.range is not None and last.status == 200
    assert path.read_bytes() == data


def test_endless_data_stops_at_the_declared_size(tmp_path: Path, publish: Published) -> None:
    data = payload(4, 100_000)
    artifact, url = publish("a", data)
    publish.server.faults = Faults(endless=True)
    transport = CountingTransport()

    async def scenario() -> ReasonError:
        async with httpx.AsyncClient(transport=transport) as client:
            cache = ArtifactCache(tmp_path, 1_000_000, client=client)
            with pytest.raises(ReasonError) as caught:
                await cache.ensure(artifact, url)
            return caught.value

    error = run(scenario())
    assert error.code == FAILED and "more than the declared" in error.detail
    assert transport.body_bytes <= artifact.size + CHUNK
    assert list((tmp_path / "sha256").iterdir()) == []
    assert not partial_of(tmp_path, artifact).exists()


def test_stalled_server_fails_after_the_read_timeout(tmp_path: Path, publish: Published) -> None:
    data = payload(5, 200_000)
    artifact, url = publish("a", data)
    publish.server.faults = Faults(stall_after=50_000, stall_s=60)
    cache = ArtifactCache(tmp_path, 1_000_000, read_timeout_s=0.2)

    error = failure(cache.ensure(artifact, url))

    assert error.code == FAILED and "no bytes for 0.2s" in error.detail
    assert not cache.has(artifact.digest)
    assert partial_of(tmp_path, artifact).stat().st_size <= 50_000  # kept to resume
    publish.server.faults = Faults()
    assert run(cache.ensure(artifact, url)).read_bytes() == data


def test_slow_whole_fails_after_the_total_timeout(tmp_path: Path, publish: Published) -> None:
    artifact, url = publish("a", payload(6, 200_000))
    publish.server.faults = Faults(stall_after=10_000, stall_s=60)
    cache = ArtifactCache(tmp_path, 1_000_000, read_timeout_s=60, total_timeout_s=0.3)

    error = failure(cache.ensure(artifact, url))

    assert error.code == FAILED and "not complete within 0.3s" in error.detail
    assert not cache.has(artifact.digest)


def test_wrong_digest_leaves_nothing_behind(tmp_path: Path, publish: Published) -> None:
    artifact, url = publish("a", payload(7, 70_000))
    publish.server.faults = Faults(wrong_bytes=True)
    cache = ArtifactCache(tmp_path, 1_000_000)

    error = failure(cache.ensure(artifact, url))

    assert error.code == FAILED and "digest" in error.detail
    assert cache.usage() == 0 and cache.entries() == []


def test_poisoned_partial_is_dropped_and_the_next_attempt_starts_over(
    tmp_path: Path, publish: Published
) -> None:
    data = payload(8, 90_000)
    artifact, url = publish("a", data)
    cache = ArtifactCache(tmp_path, 1_000_000)
    partial_of(tmp_path, artifact).write_bytes(b"x" * 1000)  # not a prefix of the artifact

    assert failure(cache.ensure(artifact, url)).code == FAILED
    assert not partial_of(tmp_path, artifact).exists()
    assert run(cache.ensure(artifact, url)).read_bytes() == data
    assert publish.server.requests_for("/a")[-1].range is None


def test_complete_partial_is_committed_without_the_network(tmp_path: Path) -> None:
    data = payload(9, 10_000)
    artifact = blob_of(data)
    cache = ArtifactCache(tmp_path, 1_000_000)
    partial_of(tmp_path, artifact).write_bytes(data)  # a crash between fsync and rename

    path = run(cache.ensure(artifact, "http://127.0.0.1:9/unreachable"))

    assert path.read_bytes() == data


@pytest.mark.parametrize("damage", ["bit rot", "truncated"])
def test_corrupted_blob_is_logged_and_fetched_again(
    tmp_path: Path, publish: Published, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    data = payload(10, 50_000)
    artifact, url = publish("a", data)
    cache = ArtifactCache(tmp_path, 1_000_000)
    path = run(cache.ensure(artifact, url))
    if damage == "bit rot":  # same size, 4 bytes overwritten
        damaged = data[:1000] + b"XXXX" + data[1004:]
        found = "sha256:" + hashlib.sha256(damaged).hexdigest()
    else:
        damaged = data[:1000]
        found = f"1000 bytes, declared {len(data)}"
    path.write_bytes(damaged)
    caplog.set_level(logging.WARNING, "muto.agent.cache")

    again = run(cache.ensure(artifact, url))
    run(cache.ensure(artifact, url))  # intact now: nothing more to say

    assert again.read_bytes() == data
    assert len(publish.server.requests_for("/a")) == 2
    (warning,) = caplog.records
    assert warning.levelno == logging.WARNING
    message = warning.getMessage()
    assert f"cached {artifact.digest} at {path} is damaged" in message
    assert found in message  # what was found, beside what was signed
    assert "fetching it again" in message


def test_least_recently_used_is_evicted_first(tmp_path: Path, publish: Published) -> None:
    cache = ArtifactCache(tmp_path, 3000)
    a, b, c, d = (publish(name, payload(i, 1000)) for i, name in enumerate("abcd"))
    for artifact, url in (a, b, c, a):  # a used again: b is now the least recent
        run(cache.ensure(*(artifact, url)))

    run(cache.ensure(*d))

    assert [cache.has(x[0].digest) for x in (a, b, c, d)] == [True, False, True, True]
    assert [e.digest for e in cache.entries()] == [c[0].digest, a[0].digest, d[0].digest]


def test_pinned_blobs_survive_eviction(tmp_path: Path, publish: Published) -> None:
    cache = ArtifactCache(tmp_path, 3000)
    a, b, c, d, e = (publish(name, payload(i, 1000)) for i, name in enumerate("abcde"))
    run(cache.ensure(*a))
    cache.pin([a[0].digest])

    for artifact in (b, c, d, e):
        run(cache.ensure(*artifact))

    assert cache.has(a[0].digest) and cache.has(e[0].digest)
    assert cache.usage() <= 3000
    assert [x.pinned for x in cache.entries() if x.digest == a[0].digest] == [True]


def test_insufficient_disk_when_pins_fill_the_budget(tmp_path: Path, publish: Published) -> None:
    cache = ArtifactCache(tmp_path, 2000)
    a, b, c = (publish(name, payload(i, 1000)) for i, name in enumerate("abc"))
    run(cache.ensure(*a))
    run(cache.ensure(*b))
    cache.pin([a[0].digest, b[0].digest])

    error = failure(cache.ensure(*c))

    assert error.code == ReasonCode.INSUFFICIENT_DISK
    assert cache.has(a[0].digest) and cache.has(b[0].digest)
    assert publish.server.requests_for("/c") == []


def test_impossible_room_evicts_nothing(tmp_path: Path, publish: Published) -> None:
    cache = ArtifactCache(tmp_path, 2000)
    small, big = publish("small", payload(1, 1000)), publish("big", payload(2, 2001))
    run(cache.ensure(*small))

    assert failure(cache.ensure(*big)).code == ReasonCode.INSUFFICIENT_DISK
    assert cache.has(small[0].digest)


def test_free_disk_is_made_by_eviction_too(tmp_path: Path, publish: Published) -> None:
    disk = 2500  # a small filesystem shared with others
    cache = ArtifactCache(tmp_path, 1_000_000, free_disk=lambda: disk - cache.usage())
    a, b, c = (publish(name, payload(i, 1000)) for i, name in enumerate("abc"))
    for artifact in (a, b, c):
        run(cache.ensure(*artifact))

    assert [cache.has(x[0].digest) for x in (a, b, c)] == [False, True, True]
    cache.pin([b[0].digest, c[0].digest])
    assert failure(cache.ensure(*a)).code == ReasonCode.INSUFFICIENT_DISK


def test_partials_count_toward_the_budget_and_are_evictable(
    tmp_path: Path, publish: Published
) -> None:
    cache = ArtifactCache(tmp_path, 2000)
    x, y, z = (publish(name, payload(i, 1000)) for i, name in enumerate("xyz"))
    publish.server.faults = Faults(truncate_after=600)
    failure(cache.ensure(*x))
    publish.server.faults = Faults()
    run(cache.ensure(*y))
    assert cache.usage() == 1600 and [e.complete for e in cache.entries()] == [False, True]

    run(cache.ensure(*z))

    assert not partial_of(tmp_path, x[0]).exists()
    assert cache.usage() == 2000


def test_evicting_the_unpinned_spares_the_pinned(tmp_path: Path, publish: Published) -> None:
    """What the agent does when an install finds the disk full (the budget had room)."""
    cache = ArtifactCache(tmp_path, 1_000_000)
    a, b, c, d = (publish(name, payload(i, 1000)) for i, name in enumerate("abcd"))
    for artifact in (a, b, c):
        run(cache.ensure(*artifact))
    publish.server.faults = Faults(truncate_after=600)
    failure(cache.ensure(*d))  # a partial, kept to resume
    cache.pin([b[0].digest])

    gone = cache.evict_unpinned()

    assert gone == [a[0].digest, c[0].digest, d[0].digest]  # least recently used first
    assert [cache.has(x[0].digest) for x in (a, b, c, d)] == [False, True, False, False]
    assert not partial_of(tmp_path, d[0]).exists() and cache.usage() == 1000
    assert cache.evict_unpinned() == []


def test_concurrent_ensures_of_one_digest_fetch_once(tmp_path: Path, publish: Published) -> None:
    data = payload(11, 500_000)
    artifact, url = publish("a", data)
    cache = ArtifactCache(tmp_path, 1_000_000)

    async def both() -> list[Path]:
        return list(await asyncio.gather(cache.ensure(artifact, url), cache.ensure(artifact, url)))

    first, second = run(both())

    assert first == second and first.read_bytes() == data
    assert len(publish.server.requests_for("/a")) == 1


def test_downloads_in_flight_are_charged_their_declared_size(
    tmp_path: Path, publish: Published
) -> None:
    a, b, c = (publish(name, payload(i, 1000)) for i, name in enumerate("abc"))
    cache = ArtifactCache(tmp_path, 2000)

    async def all_at_once() -> list[Path | BaseException]:
        ensures = (cache.ensure(*x) for x in (a, b, c))
        return list(await asyncio.gather(*ensures, return_exceptions=True))

    got_a, got_b, got_c = run(all_at_once())

    assert isinstance(got_a, Path) and isinstance(got_b, Path)
    assert isinstance(got_c, ReasonError) and got_c.code == ReasonCode.INSUFFICIENT_DISK
    assert cache.usage() == 2000


def test_pins_survive_a_restart_and_block_evict(tmp_path: Path, publish: Published) -> None:
    a, b = publish("a", payload(1, 100)), publish("b", payload(2, 100))
    cache = ArtifactCache(tmp_path, 1000)
    run(cache.ensure(*a))
    run(cache.ensure(*b))
    cache.pin([a[0].digest])

    restarted = ArtifactCache(tmp_path, 1000)

    assert restarted.pinned() == {a[0].digest}
    with pytest.raises(EvictionRefused):
        restarted.evict(a[0].digest)
    assert restarted.evict(b[0].digest) and not restarted.has(b[0].digest)
    assert not restarted.evict(b[0].digest)


def test_digests_that_are_not_sha256_hex_are_refused(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path, 1000)
    for bad in ("../../etc/passwd", "sha256:../x", "sha256:" + "A" * 64, "md5:abc"):
        with pytest.raises(ValueError):
            cache.path_for(bad)


# Each step ensures artifact i, or replaces the pinned set.
steps = st.lists(
    st.one_of(
        st.tuples(st.just("ensure"), st.integers(0, 5)),
        st.tuples(st.just("pin"), st.frozensets(st.integers(0, 5), max_size=3)),
    ),
    min_size=1,
    max_size=12,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sizes=st.lists(st.integers(0, 1500), min_size=6, max_size=6),
    budget=st.integers(0, 4000),
    plan=steps,
)
def test_budget_holds_and_pins_survive_any_sequence(
    server: ArtifactServer, sizes: list[int], budget: int, plan: list[tuple[str, Any]]
) -> None:
    blobs = [(blob_of(payload(i, n), f"p{i}"), payload(i, n)) for i, n in enumerate(sizes)]
    urls = [server.put(f"/p{i}", data) for i, (_, data) in enumerate(blobs)]
    with tempfile.TemporaryDirectory() as root:
        cache = ArtifactCache(Path(root), budget)
        pinned: set[str] = set()

        async def play() -> None:
            for kind, arg in plan:
                if kind == "pin":
                    pinned.clear()
                    pinned.update(blobs[i][0].digest for i in arg)
                    cache.pin(pinned)
                    continue
                artifact, data = blobs[arg]
                kept = {d for d in pinned if cache.has(d)}
                try:
                    path = await cache.ensure(artifact, urls[arg])
                    assert path.read_bytes() == data
                except ReasonError as error:
                    assert error.code == ReasonCode.INSUFFICIENT_DISK
                    others = {b.digest: b.size for b, _ in blobs if b.digest in kept}
                    others.pop(artifact.digest, None)
                    assert sum(others.values()) + artifact.size > budget
                assert cache.usage() <= budget
                assert all(cache.has(d) for d in kept)

        run(play())
