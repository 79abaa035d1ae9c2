"""PUT /artifacts/{digest} (operators upload), GET|HEAD /artifacts/{digest} (operators and
vehicles download, with a single byte range for resuming)."""

from __future__ import annotations

import hashlib
import re

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from muto.cloud.api.context import operator, plane, principal
from muto.cloud.api.responses import BodyTooLarge, error, ok
from muto.cloud.artifacts.store import DIGEST, ArtifactStore
from muto.cloud.errors import Invalid, NotFound

RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
OCTETS = "application/octet-stream"


def store(request: Request) -> ArtifactStore:
    found: ArtifactStore = request.state.artifacts
    return found


def _digest(request: Request) -> str:
    digest = str(request.path_params["digest"])
    if not DIGEST.match(digest):
        raise NotFound(f"no artifact {digest!r}: artifacts are named sha256:<64 lowercase hex>")
    return digest


async def upload(request: Request) -> Response:
    """Stream the body into the store, hashing it; commit only if it is the digest
    named in the path and within the size limit. Uploading the same bytes twice is 200."""
    await operator(request)
    digest = _digest(request)
    limit = plane(request).settings.max_artifact_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    artifacts = store(request)
    if artifacts.size(digest) is not None:
        async for _ in request.stream():  # drain: the client may still be sending
            pass
        return ok({"digest": digest, "size": artifacts.size(digest)}, 200, {"created": False})
    pending = artifacts.begin(digest)
    hasher, size = hashlib.sha256(), 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(limit)
            hasher.update(chunk)
            await run_in_threadpool(pending.write, chunk)  # a slow disk never stalls the loop
        actual = f"sha256:{hasher.hexdigest()}"
        if actual != digest:
            raise Invalid(
                f"the body's digest is {actual}, not the {digest} it was uploaded as",
                {"path": "body", "digest": actual, "size": size},
            )
    except BaseException:
        pending.abort()
        raise
    created = await run_in_threadpool(pending.commit)
    return ok({"digest": digest, "size": size}, 201 if created else 200, {"created": created})


async def download(request: Request) -> Response:
    await principal(request)  # any vehicle may read: artifacts are verified against signed digests
    digest = _digest(request)
    artifacts = store(request)
    size = artifacts.size(digest)
    if size is None:
        raise NotFound(f"no artifact {digest} is stored")
    headers = {"Accept-Ranges": "bytes", "ETag": f'"{digest}"', "Cache-Control": "immutable"}
    wanted = request.headers.get("range")
    if_range = request.headers.get("if-range")
    span = None if wanted is None or (if_range and if_range != headers["ETag"]) else wanted
    try:
        start, end, partial = byte_range(span, size)
    except ValueError as exc:
        return error(
            416,
            "range_not_satisfiable",
            str(exc),
            {"size": size},
            headers={"Content-Range": f"bytes */{size}"},
        )
    headers["Content-Length"] = str(end - start)
    status = 200
    if partial:
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type=OCTETS)
    return StreamingResponse(
        artifacts.read(digest, start, end), status_code=status, headers=headers, media_type=OCTETS
    )


def byte_range(header: str | None, size: int) -> tuple[int, int, bool]:
    """(start, end, partial): [start, end) for one `bytes=` range (RFC 9110 14.1.2),
    the whole (partial False) without one; ValueError for a range past the end.
    Several ranges, or an unparseable one, are ignored (RFC 9110 allows it): the whole."""
    whole = (0, size, False)
    found = None if header is None else RANGE.match(header.strip())
    if found is None:
        return whole
    first, last = found.groups()
    if not first and not last:
        return whole
    if not first:  # a suffix: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            raise ValueError("the suffix range selects no byte")
        return max(0, size - n), size, True
    start = int(first)
    if start >= size:
        raise ValueError(f"the range starts at {start}, the artifact has {size} bytes")
    end = size if not last else min(size, int(last) + 1)
    if end <= start:
        return whole  # last before first: not a valid range, ignored
    return start, end, True
