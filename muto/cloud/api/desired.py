"""POST /desired-states, GET /desired-states/latest (ETag / If-None-Match)."""

from __future__ import annotations

import re
from collections.abc import Callable

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from muto.cloud.api.context import (
    acting_on,
    body,
    correlation,
    idempotency_key,
    keyed,
    off_loop,
    operator,
    plane,
    principal,
    replayed,
    write_once,
)
from muto.cloud.api.responses import ok
from muto.cloud.commands import Assignment, Cause, assign_desired_state
from muto.cloud.errors import Invalid, NotFound
from muto.cloud.idempotency import Answer, once
from muto.cloud.queries import vehicles_in_active_rollouts
from muto.cloud.writer import Written
from muto.domain.desired import DesiredStateBundle, DesiredStateRequest, Envelope
from muto.domain.release import release_key
from muto.domain.selectors import parse_selector
from muto.projections.desired import rotated_etag


async def create(request: Request) -> Response:
    """With an Idempotency-Key, a resend is answered as the first request was (the same
    revision and sequences), with no second revision (muto.cloud.idempotency)."""
    who = await operator(request)
    header = correlation(request)
    key = idempotency_key(request)
    desired = await body(request, DesiredStateRequest)
    cp = plane(request)
    cause = Cause.of(who.actor, desired.correlation_id or header)
    keyed_request = keyed(request, who, key, desired)

    async def assign() -> Written[Answer]:
        stack = desired.stack
        await refuse_unverifiable(request, stack.name, stack.version)
        one = desired.target.vehicle
        if one is not None:
            vehicle_ids = [one]
        else:
            assert desired.target.selector is not None  # Target's own rule
            selector = parse_selector(desired.target.selector)
            vehicle_ids = await off_loop(cp.queries.vehicle_ids, selector)
        # The rollouts the views see targeting them; the command decides (in the write).
        busy = await off_loop(vehicles_in_active_rollouts, cp.queries, vehicle_ids)
        command = assign_desired_state(
            desired,
            vehicle_ids,
            cause,
            cp.sign,
            now=cp.clock,
            active_rollouts=sorted(set(busy.values())),
        )
        return await cp.write(once(keyed_request, command, assigned(cause), cause, cp.clock))

    written = await write_once(request, keyed_request, assign)
    answer = written.value
    return ok(
        answer.data,
        answer.status,
        {
            "position": written.position,
            "targeted": len(answer.data["vehicles"]),
            "viewsCurrent": written.views_current,
        },
        replayed(answer),
    )


async def refuse_unverifiable(request: Request, stack: str, version: str) -> None:
    """VERIFY_SIGNATURE_FAILED (422) if the release is not signed by the release keys in
    force, at their threshold: every vehicle would refuse it (after a key was retired
    or the threshold raised). Not checked without release keys configured. A release
    that is not registered is the command's 404."""
    cp = plane(request)
    if cp.signing.configured is None:
        return
    key = release_key(stack, version)
    try:
        stored, added = await off_loop(cp.queries.release_envelope, key)
    except NotFound:
        return
    envelope = cp.caches.releases.cached(key, added) or msgspec.convert(stored, Envelope)
    await off_loop(cp.signing.check_in_force, key, added, envelope)


def assigned(cause: Cause) -> Callable[[Assignment], Answer]:
    """The answer to an assignment: what its key stores, and what a resend gets."""

    def answer(assignment: Assignment) -> Answer:
        data = {
            "desiredStateRevision": assignment.revision,
            "release": assignment.release_key,
            "correlationId": cause.correlation_id,
            "vehicles": assignment.sequences,
        }
        return Answer(201, data)

    return answer


async def latest(request: Request) -> Response:
    caller = await principal(request)
    vehicle_id = request.query_params.get("vehicleId")
    if not vehicle_id:
        raise Invalid("query parameter 'vehicleId' is required", {"path": "query.vehicleId"})
    acting_on(caller, vehicle_id)
    cp = plane(request)
    etags = cp.caches.etags
    asked = asked_etags(request.headers.get("if-none-match"))
    recent = etags.recent(vehicle_id)
    if recent is not None and recent in asked:  # most polls: no query at all
        return not_modified(recent)
    generation = etags.generation()
    found = await off_loop(cp.queries.desired_document, vehicle_id)
    if found is None:
        raise NotFound(f"no desired state has been assigned to vehicle {vehicle_id!r}")
    # Read after `generation`: a rotation published meanwhile keeps this ETag unremembered.
    chain = cp.caches.rotations.cached()
    if chain is None:
        chain = await off_loop(cp.caches.rotations.chain)
    etag = rotated_etag(found.etag, chain.version)
    etags.remember(vehicle_id, etag, generation)
    if etag in asked:
        return not_modified(etag)
    key = found.release_key
    release = None
    if key:
        releases, added = cp.caches.releases, found.signatures_added  # as its ETag says
        release = releases.cached(key, added)
        if release is None:
            release = await off_loop(releases.get, key, added)
    bundle = DesiredStateBundle(
        desired_state=found.decoded_envelope(),
        release=release,
        key_rotations=chain.envelopes or msgspec.UNSET,  # left out while there is none
    )
    return ok(
        bundle,
        metadata={"revision": found.revision, "sequence": found.sequence},
        headers={"ETag": etag, "Cache-Control": "no-cache"},
    )


def not_modified(etag: str) -> Response:
    return Response(status_code=304, headers={"ETag": etag})


class _Any(set[str]):
    """`If-None-Match: *`: matches whatever representation is current."""

    def __contains__(self, _: object) -> bool:
        return True


ANY = _Any()
# One element of an entity-tag list: `W/` or not, the quoted opaque tag (which may hold a
# comma), then a comma or the end; empty elements (", ,") are allowed.
_TAG = re.compile(r'[ \t,]*(?:(?:W/)?("[^"]*")[ \t]*(?:,|\Z)|\Z)')


def asked_etags(header: str | None) -> set[str]:
    """The ETags an `If-None-Match` header names, for RFC 9110's weak comparison (section
    13.1.2): opaque tags only, `W/"x"` matches `"x"` (ours are strong), a list matches
    if any member does, `*` matches any. `tag in asked_etags(...)` is the whole check."""
    if not header:
        return set()
    if header[0] == '"' and header.find('"', 1) == len(header) - 1:
        return {header}  # one strong tag, what agents send: most polls stop here
    if header.strip() == "*":
        return ANY
    tags: set[str] = set()
    at = 0
    while at < len(header):
        found = _TAG.match(header, at)
        if found is None:
            return set()  # not a list of entity-tags: it matches nothing (a full answer)
        if found.group(1):
            tags.add(found.group(1))
        at = found.end()
    return tags
