"""Fetching one artifact into its partial file over HTTP.

Resumes with `Range: bytes=N-` after hashing the bytes already there, restarts when a
server ignores Range (200), stops the moment the bytes exceed the declared size, and
gives up on a stalled read or a slow whole. The partial is kept when its bytes may
still be a good prefix (network trouble, an HTTP error) and deleted when they are
known bad (too long, wrong digest, a server that disagrees about the range).
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from muto.agent.disk import disk_full
from muto.agent.transport.exchange import Exchanges, HttpError, Stalled
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.domain.release import Artifact
from muto.trust.artifacts import CHUNK, ArtifactVerifier
from muto.trust.files import PRIVATE_FILE_MODE, private_file

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-\d+/(?:\d+|\*)$")


@dataclass(frozen=True)
class Timeouts:
    read_s: float  # longest wait for any next bytes (a stalled server)
    total_s: float  # longest whole retrieval (a trickling server)


class _KeepPartial(Exception):
    """A failure that says nothing against the bytes already downloaded."""


def range_start(content_range: str | None) -> int | None:
    """The first byte position of a `Content-Range: bytes N-M/T` header, else None."""
    match = _CONTENT_RANGE.match((content_range or "").strip())
    return int(match.group(1)) if match else None


def failed(artifact: Artifact, detail: str) -> ReasonError:
    # The detail names the artifact, never the URL: it may carry a presigned token.
    return ReasonError(ReasonCode.ARTIFACT_DOWNLOAD_FAILED, f"{artifact.ref}: {detail}")


async def fetch(
    client: Exchanges,
    url: str,
    headers: Mapping[str, str],
    artifact: Artifact,
    partial: Path,
    timeouts: Timeouts,
) -> None:
    """Leave the verified bytes of `artifact` in `partial`, or raise ReasonError."""
    verifier = await asyncio.to_thread(_resume, partial, artifact)
    if verifier.size == artifact.size:
        try:
            verifier.finish()
            private_file(partial)  # an empty artifact has no partial yet
            return  # complete already: nothing to ask the network for
        except ReasonError:
            partial.unlink(missing_ok=True)
            verifier = ArtifactVerifier(artifact)
    try:
        async with asyncio.timeout(timeouts.total_s):
            verifier = await _stream(client, url, headers, verifier, partial, timeouts)
    except ReasonError:
        partial.unlink(missing_ok=True)
        raise
    except TimeoutError as exc:
        raise failed(artifact, f"not complete within {timeouts.total_s}s") from exc
    except Stalled as exc:
        raise failed(artifact, f"no bytes for {timeouts.read_s}s ({exc})") from exc
    except (HttpError, _KeepPartial) as exc:
        raise failed(artifact, f"{type(exc).__name__}: {exc}") from exc
    except OSError as exc:  # writing the partial
        if disk_full(exc):
            raise ReasonError(ReasonCode.INSUFFICIENT_DISK, f"{artifact.ref}: {exc}") from exc
        raise failed(artifact, f"{type(exc).__name__}: {exc}") from exc
    if verifier.size < artifact.size:
        raise failed(artifact, f"ended after {verifier.size} of {artifact.size} bytes")
    try:
        verifier.finish()
    except ReasonError:
        partial.unlink(missing_ok=True)
        raise


async def _stream(
    client: Exchanges,
    url: str,
    headers: Mapping[str, str],
    verifier: ArtifactVerifier,
    partial: Path,
    timeouts: Timeouts,
) -> ArtifactVerifier:
    artifact, offset = verifier.artifact, verifier.size
    # Byte offsets must count the artifact's own bytes, not a compressed encoding.
    skip = ("accept-encoding", "range")
    request_headers = {k: v for k, v in headers.items() if k.lower() not in skip}
    request_headers["Accept-Encoding"] = "identity"
    if offset:
        request_headers["Range"] = f"bytes={offset}-"
    async with client.stream(
        "GET", url, headers=request_headers, timeout_s=timeouts.read_s, follow_redirects=True
    ) as response:
        status = response.status_code
        if status == 416:
            raise failed(artifact, f"server has fewer than the {offset} bytes we hold")
        if status == 206 and range_start(response.headers.get("content-range")) != offset:
            got = response.headers.get("content-range")
            raise failed(artifact, f"asked from byte {offset}, got Content-Range {got}")
        if status not in (200, 206):
            raise _KeepPartial(f"HTTP {status}")
        if status == 200 and offset:
            verifier = ArtifactVerifier(artifact)  # Range ignored: the whole body follows
        with _append(partial) as f:
            if verifier.size == 0:
                f.truncate(0)
            async for chunk in response.body:
                verifier.update(chunk)  # raises the moment bytes pass the declared size
                f.write(chunk)
    return verifier


def _append(partial: Path) -> BinaryIO:
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE_MODE)
    return os.fdopen(fd, "ab")


def _resume(partial: Path, artifact: Artifact) -> ArtifactVerifier:
    """A verifier that has already seen the bytes of `partial`, if any."""
    verifier = ArtifactVerifier(artifact)
    try:
        with partial.open("rb") as f:
            while chunk := f.read(CHUNK):
                verifier.update(chunk)
    except FileNotFoundError:
        pass
    except ReasonError:  # longer than declared: not a prefix of this artifact
        partial.unlink(missing_ok=True)
        return ArtifactVerifier(artifact)
    return verifier
