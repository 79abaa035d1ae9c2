"""An agent resumes a hosted artifact where its partial download stopped: the agent's
own cache and download code against the real server (`muto cloud serve`), which answers
the Range request with the rest (206), and the bytes verify against the signed digest."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import httpx

from muto.agent.artifacts import CachedArtifacts
from muto.agent.cache import ArtifactCache
from muto.agent.cache.layout import Layout
from muto.domain.release import Artifact, ArtifactType
from tests.support.api_server import running

SIZE = 600_000
CUT = 250_000


def test_a_partial_download_resumes_with_a_range_request(tmp_path: Path) -> None:
    blob = os.urandom(SIZE)
    digest = f"sha256:{hashlib.sha256(blob).hexdigest()}"
    artifact = Artifact(
        type=ArtifactType.ARCHIVE, ref=f"artifacts/{digest}", digest=digest, size=SIZE
    )
    with running("sqlite", tmp_path / "cloud", "operator", "veh-1") as (server, tokens):
        with server.client(tokens["operator"][0]) as op:
            assert op.put(f"/artifacts/{digest}", content=blob).status_code == 201
        seen: list[tuple[str | None, int]] = []

        async def record(response: httpx.Response) -> None:
            seen.append((response.request.headers.get("range"), response.status_code))

        async def fetch() -> Path:
            root = tmp_path / "agent-cache"
            partial = Layout(root).partial(digest.removeprefix("sha256:"))
            partial.parent.mkdir(parents=True, exist_ok=True)
            partial.write_bytes(blob[:CUT])  # what an interrupted download left
            async with httpx.AsyncClient(event_hooks={"response": [record]}) as client:
                cache = ArtifactCache(root, 10 * SIZE, client=client)
                source = CachedArtifacts(
                    cache,
                    base_url=server.url + "/",
                    token=tokens["veh-1"][0],
                    token_origin=server.url,
                )
                fetched = await source.ensure(artifact)
            return fetched.path

        path = asyncio.run(fetch())
    assert path.read_bytes() == blob
    assert seen == [(f"bytes={CUT}-", 206)]
