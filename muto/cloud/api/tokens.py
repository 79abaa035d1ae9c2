"""POST /tokens, POST /tokens/{id}/revoke: provisioning credentials (operators only).

The secret is returned once, in the response to the request that issued it; only its
hash is stored. A resend with the same Idempotency-Key issues nothing and cannot show
the secret again: it is answered 409 naming the token (docs/api.md)."""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response

from muto.cloud.api.context import (
    body,
    correlation,
    idempotency_key,
    keyed,
    off_loop,
    operator,
    plane,
    write_once,
)
from muto.cloud.api.responses import ok
from muto.cloud.commands import Cause
from muto.cloud.idempotency import Answer, once
from muto.cloud.tokens import Role, issue_token, revoke_token, secret_not_kept
from muto.cloud.writer import Written
from muto.domain.requests import TokenRequest


async def issue(request: Request) -> Response:
    """With an Idempotency-Key, a resend issues no second token; but the secret is not
    kept (only its hash is), so a resend is answered 409 naming the token the first
    request issued: revoke it if its secret was lost (tokens.secret_not_kept)."""
    who = await operator(request)
    key = idempotency_key(request)
    wanted = await body(request, TokenRequest)
    cp = plane(request)
    cause = Cause.of(who.actor, correlation(request))
    keyed_request = keyed(request, who, key, wanted)
    secret = ""

    async def issue_one() -> Written[Answer]:
        nonlocal secret
        if wanted.vehicle_id is not None:
            await off_loop(cp.queries.vehicle, wanted.vehicle_id)  # 404: not registered
        secret, command = issue_token(Role(wanted.role), wanted.vehicle_id, cause)
        return await cp.write(once(keyed_request, command, issued(wanted), cause, cp.clock))

    written = await write_once(request, keyed_request, issue_one)
    answer = written.value
    if answer.replayed:
        assert key is not None
        raise secret_not_kept(key, answer.data["tokenId"])
    token_id, role, vehicle_id = (answer.data[k] for k in ("tokenId", "role", "vehicleId"))
    return ok(
        {"tokenId": token_id, "token": secret, "role": role, "vehicleId": vehicle_id},
        answer.status,
        {"position": written.position},
    )


def issued(wanted: TokenRequest) -> Callable[[str], Answer]:
    """The answer to an issued token, as its key stores it: everything but the secret."""

    def answer(token_id: str) -> Answer:
        data = {"tokenId": token_id, "role": wanted.role, "vehicleId": wanted.vehicle_id}
        return Answer(201, data)

    return answer


async def revoke(request: Request) -> Response:
    who = await operator(request)
    token_id = request.path_params["token_id"]
    cause = Cause.of(who.actor, correlation(request))
    written = await plane(request).write(revoke_token(token_id, cause))
    return ok({"tokenId": token_id, "revoked": True}, metadata={"position": written.position})
