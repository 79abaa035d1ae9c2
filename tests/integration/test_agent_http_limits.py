"""Every HTTP answer the agent reads is streamed with a hard size limit and a deadline
(issue #14 item 2): a real local server sends an endless body or trickles; the agent
refuses with a reason code, in bounded time and memory."""

from __future__ import annotations

import asyncio
import time
import tracemalloc

import httpx

from muto.agent.compose import simulated_agent
from muto.agent.transport.http import MAX_BUNDLE_BYTES, CloudClient, Fetched, NotFetched
from muto.domain.reasons import ReasonCode
from muto.trust import KeySet, Signer, TrustConfig
from tests.support.artifact_server import ArtifactServer, Faults

LATEST = "/desired-states/latest?vehicleId=car-1"
START = b'{"data": {"schema": "muto.desired-state-bundle.v1", "x": "'
MIB = 1 << 20


def test_an_endless_bundle_is_refused_in_bounded_memory() -> None:
    async def fetch(server: ArtifactServer) -> tuple[Fetched | NotFetched, int]:
        client = CloudClient(server.base_url, "car-1", "tok")
        tracemalloc.start()
        try:
            got = await asyncio.wait_for(client.latest(None), 60)
            return got, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            await client.aclose()

    with ArtifactServer(faults=Faults(endless=True)) as server:
        server.put(LATEST, START)
        got, peak = asyncio.run(fetch(server))
    assert isinstance(got, Fetched) and got.bundle is None
    assert got.problem == f"response larger than {MAX_BUNDLE_BYTES} bytes: not read further"
    assert peak < 3 * MAX_BUNDLE_BYTES, f"peak {peak / MIB:.1f} MiB"


def test_a_declared_oversize_bundle_is_not_read_at_all() -> None:
    async def fetch(server: ArtifactServer) -> Fetched | NotFetched:
        async with httpx.AsyncClient() as http:
            client = CloudClient(server.base_url, "car-1", None, client=http, max_bundle_bytes=1000)
            return await asyncio.wait_for(client.latest(None), 60)

    with ArtifactServer() as server:
        server.put(LATEST, START + b"x" * 5000)
        got = asyncio.run(fetch(server))
    assert (
        isinstance(got, Fetched) and got.problem is not None and "larger than 1000" in got.problem
    )


def test_a_trickling_answer_is_abandoned_at_the_deadline() -> None:
    async def fetch(server: ArtifactServer) -> tuple[Fetched | NotFetched, float]:
        client = CloudClient(server.base_url, "car-1", None, timeout_s=30, total_timeout_s=0.5)
        started = time.monotonic()
        try:
            return await client.latest(None), time.monotonic() - started
        finally:
            await client.aclose()

    # Silent for 20 s after 10 bytes: within the per-read timeout (30 s), past the deadline.
    with ArtifactServer(faults=Faults(stall_after=10, stall_s=20)) as server:
        server.put(LATEST, START)
        got, took = asyncio.run(fetch(server))
    assert isinstance(got, NotFetched) and got.why == "unreachable"
    assert got.detail == "no complete answer within 0.5s"
    assert took < 10


def test_an_endless_answer_to_a_report_is_not_read() -> None:
    async def deliver(server: ArtifactServer) -> tuple[str, str]:
        client = CloudClient(server.base_url, "car-1", None)
        try:
            return await asyncio.wait_for(client.deliver("reconcile", b"{}"), 60)
        finally:
            await client.aclose()

    with ArtifactServer(faults=Faults(endless=True)) as server:
        server.put("/reports/reconcile", b"refused: ")
        outcome, detail = asyncio.run(deliver(server))
    assert outcome == "ack"  # a 200 is an acknowledgement whatever follows it
    with ArtifactServer(faults=Faults(endless=True, bearer_token="other")) as server:
        outcome, detail = asyncio.run(deliver(server))
    assert (outcome, detail) == ("retry", "HTTP 401")


def test_the_agent_rejects_an_endless_bundle_with_a_reason_code() -> None:
    key = Signer.generate()
    trust = TrustConfig(
        release_keys=KeySet(keys=[key.public_pem]), control_plane_keys=KeySet(keys=[key.public_pem])
    )

    async def one_pass(server: ArtifactServer) -> list[str]:
        agent = simulated_agent("car-1", trust, cloud_url=server.base_url)
        await agent.start(loop=False)
        try:
            verdict = await asyncio.wait_for(agent.reconcile(), 60)
            (outcome,) = agent.journal.state.reported.values()  # the report queued
            return [str(verdict.kind), str(outcome.status), *map(str, outcome.codes)]
        finally:
            await agent.stop()

    with ArtifactServer(faults=Faults(endless=True)) as server:
        server.put(LATEST, START)
        outcome = asyncio.run(one_pass(server))
    assert outcome[1:] == ["rejected", ReasonCode.VERIFY_SIGNATURE_FAILED], outcome


def test_an_answer_built_in_memory_is_read_and_an_encoded_one_is_refused() -> None:
    """A transport may hand back a body that is already read (a proxy, the fault rig);
    a compressed body is never decoded: a small one could expand without bound."""
    import gzip

    def answer(request: httpx.Request) -> httpx.Response:
        if request.headers.get("x-compress"):
            packed = gzip.compress(START + b'"}}')
            return httpx.Response(200, headers={"content-encoding": "gzip"}, content=packed)
        return httpx.Response(200, headers={"etag": '"e1"'}, content=START + b'"}}')

    async def fetch(compress: bool) -> Fetched | NotFetched:
        headers = {"x-compress": "1"} if compress else {}
        async with httpx.AsyncClient(transport=httpx.MockTransport(answer), headers=headers) as h:
            return await CloudClient("http://cloud", "car-1", None, client=h).latest(None)

    plain = asyncio.run(fetch(False))
    assert isinstance(plain, Fetched) and plain.etag == '"e1"'
    assert plain.problem is not None and plain.problem.startswith("malformed bundle")
    packed = asyncio.run(fetch(True))
    assert isinstance(packed, Fetched) and packed.bundle is None
    assert packed.problem == "answered with Content-Encoding 'gzip'; asked for identity"
