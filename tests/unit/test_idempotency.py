"""The Idempotency-Key rule (muto/cloud/idempotency.py): a keyed write is stored once
and its answer given again to a resend of the same request; the key with another
request is refused and stores nothing; a key is honoured for KEY_TTL; two writers
racing with one key (one batch, or two processes on one store) store one write and
give the loser the winner's answer. Through the real writer and event log, with
AccessToken issues as the keyed write. The HTTP side is
tests/integration/test_api_idempotency.py."""

from __future__ import annotations

import asyncio
import inspect
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from muto.cloud.api.app import ROUTES
from muto.cloud.errors import AppError
from muto.cloud.eventlog import EventLog
from muto.cloud.idempotency import (
    KEY_TTL,
    Answer,
    KeyedRequest,
    KeyReused,
    fingerprint,
    once,
    recorded,
)
from muto.cloud.settings import Settings
from muto.cloud.tokens import Role, issue_token
from muto.cloud.writer import Command, UnitOfWork, Writer, Written
from muto.domain.model.idempotency import IdempotencyKey
from muto.domain.requests import TokenRequest
from muto.domain.wire import decode
from muto.fleetctl import connection
from muto.fleetctl.connection import Api, Connection
from muto.sim.fleet import SimFleet, SimVehicle
from muto.sim.profile import SimProfile
from muto.trust import FleetKeys
from tests.support.specs import load_spec
from tests.support.spine import cause

WAIT = 30.0
T0 = datetime(2026, 1, 1, tzinfo=UTC)
OPERATOR = "operator:t1"


class Clock:
    def __init__(self) -> None:
        self.at = T0

    def __call__(self) -> datetime:
        return self.at


def request(key: str = "k-1", actor: str = OPERATOR, body: str = '{"role":"operator"}') -> Any:
    return KeyedRequest.of(key, actor, "POST", "/tokens", decode(body, TokenRequest))


def issue(keyed: KeyedRequest | None, clock: Clock | None = None) -> Command[Answer]:
    """A token issue, keyed: what POST /tokens stores."""
    _, command = issue_token(Role.OPERATOR, None, cause())
    answer = lambda token_id: Answer(201, {"tokenId": token_id})  # noqa: E731
    return once(keyed, command, answer, cause(), clock or Clock())


def topics(log: EventLog) -> list[str]:
    return [n.topic.rpartition(":")[2] for n in log.select(0, 10_000)]


def test_a_resend_is_answered_as_the_first_and_stores_nothing(
    log: EventLog, writer: Writer
) -> None:
    first = writer.execute(issue(request()))
    again = writer.execute(issue(request()))
    assert first.value.status == 201 and not first.value.replayed
    assert again.value == Answer(201, first.value.data, replayed=True)
    assert again.position is None  # nothing stored
    assert topics(log) == ["AccessToken.Issued", "IdempotencyKey.Used"]
    stored: IdempotencyKey = log.repository.get(IdempotencyKey.create_id("k-1", OPERATOR))
    assert (stored.actor, stored.status, stored.answer) == (OPERATOR, 201, first.value.data)


@pytest.mark.parametrize(
    "other",
    [
        request(body='{"role":"vehicle","vehicleId":"v1"}'),  # another body
        KeyedRequest("k-1", OPERATOR, fingerprint("POST", "/rollouts", {"role": "operator"})),
    ],
    ids=["body", "path"],
)
def test_the_key_with_another_request_is_refused_and_stores_nothing(
    log: EventLog, writer: Writer, other: KeyedRequest
) -> None:
    writer.execute(issue(request()))
    before = log.position()
    with pytest.raises(KeyReused) as refused:
        writer.execute(issue(other))
    assert refused.value.status == 422 and refused.value.code == "invalid"
    assert refused.value.details == {"path": "header.Idempotency-Key"}
    assert "'k-1'" in refused.value.message
    assert log.position() == before


def test_a_request_is_the_same_whatever_its_spacing_key_order_or_omitted_defaults() -> None:
    assert request(body='{"role":"operator"}') == request(
        body='{ "vehicleId": null,  "role": "operator" }'
    )
    assert request(body='{"role":"operator"}') != request(body='{"role":"vehicle","vehicleId":"v"}')
    assert fingerprint("POST", "/tokens", {}) != fingerprint("PUT", "/tokens", {})


def test_a_key_is_honoured_for_its_ttl_then_keys_a_new_write(log: EventLog, writer: Writer) -> None:
    clock = Clock()
    first = writer.execute(issue(request(), clock))
    clock.at = T0 + KEY_TTL - timedelta(seconds=1)
    assert writer.execute(issue(request(), clock)).value.replayed
    clock.at = T0 + KEY_TTL
    later = writer.execute(issue(request(body='{"role":"vehicle","vehicleId":"v1"}'), clock))
    assert not later.value.replayed and later.value.data != first.value.data
    assert sorted(topics(log)[-2:]) == ["AccessToken.Issued", "IdempotencyKey.Reused"]
    clock.at += timedelta(hours=1)  # the key now answers for its new request only
    assert writer.execute(
        issue(request(body='{"role":"vehicle","vehicleId":"v1"}'), clock)
    ).value == Answer(201, later.value.data, replayed=True)
    with pytest.raises(KeyReused):
        writer.execute(issue(request(), clock))


def test_a_refused_write_takes_no_key(log: EventLog, writer: Writer) -> None:
    def refused(uow: UnitOfWork) -> str:
        raise AppError("no")

    keyed = request()
    with pytest.raises(AppError):
        writer.execute(once(keyed, refused, lambda v: Answer(201, {"v": v}), cause(), Clock()))
    assert log.position() == 0
    assert not writer.execute(issue(keyed)).value.replayed


def test_without_a_key_the_command_is_as_it_was(log: EventLog, writer: Writer) -> None:
    writer.execute(issue(None))
    writer.execute(issue(None))
    assert topics(log) == ["AccessToken.Issued", "AccessToken.Issued"]


class Gate:
    """A command that holds the writer thread until opened: what is queued behind it
    is taken as one batch."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()

    def __call__(self, uow: UnitOfWork) -> None:
        self.entered.set()
        assert self.opened.wait(WAIT), "gate never opened"


def test_two_requests_with_one_key_in_one_batch_store_one_write(
    log: EventLog, writer: Writer
) -> None:
    gate = Gate()
    held = writer.submit(gate)
    assert gate.entered.wait(WAIT)
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures: list[Future[Written[Answer]]] = list(
            pool.map(lambda _: writer.submit(issue(request())), range(8))
        )
    gate.opened.set()
    held.result(WAIT)
    answers = [f.result(WAIT).value for f in futures]
    assert [a.replayed for a in answers] == [False] + [True] * 7
    assert {a.data["tokenId"] for a in answers} == {answers[0].data["tokenId"]}
    assert topics(log) == ["AccessToken.Issued", "IdempotencyKey.Used"]


def test_the_loser_of_a_race_with_another_process_gets_the_winners_answer(
    store_settings: Settings,
) -> None:
    """Two event logs on one store, as two API processes: B decides while the key is
    free, A stores first; B's save collides on the key's stream, its command runs
    again on fresh loads, finds A's key, and answers with A's answer."""
    a, b = EventLog.open(store_settings), EventLog.open(store_settings)
    writer_a, writer_b = Writer(a), Writer(b)
    writer_a.start()
    writer_b.start()
    inside, stored = threading.Event(), threading.Event()
    runs = []
    _, issue_b = issue_token(Role.OPERATOR, None, cause())

    def slow_issue(uow: UnitOfWork) -> str:
        runs.append(1)
        inside.set()
        assert stored.wait(WAIT)
        return issue_b(uow)

    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            keyed = request()
            answer = lambda v: Answer(201, {"tokenId": v})  # noqa: E731
            losing = pool.submit(
                writer_b.execute, once(keyed, slow_issue, answer, cause(), Clock())
            )
            assert inside.wait(WAIT)
            won = writer_a.execute(issue(keyed))
            stored.set()
            lost = losing.result(WAIT)
        assert lost.value == Answer(201, won.value.data, replayed=True)
        assert runs == [1]  # B's write never ran again, nor was stored
        assert topics(a) == ["AccessToken.Issued", "IdempotencyKey.Used"]
        # Any process (or a restarted one) reads the key from the store.
        assert recorded(b, keyed, T0) == lost.value
    finally:
        writer_a.close()
        writer_b.close()
        a.close()
        b.close()


def test_recorded_reads_a_key_from_the_log_and_refuses_another_request(
    log: EventLog, writer: Writer
) -> None:
    assert recorded(log, request(), T0) is None
    first = writer.execute(issue(request()))
    assert recorded(log, request(), T0) == Answer(201, first.value.data, replayed=True)
    assert recorded(log, request(), T0 + KEY_TTL) is None  # expired: free again
    with pytest.raises(KeyReused):
        recorded(log, request(body='{"role":"vehicle","vehicleId":"v1"}'), T0)


def test_a_key_is_its_senders_another_senders_same_key_is_another_write(
    log: EventLog, writer: Writer
) -> None:
    first = writer.execute(issue(request()))
    other = writer.execute(issue(request(actor="operator:t2")))
    assert not other.value.replayed and other.value.data != first.value.data
    assert recorded(log, request(actor="operator:t2"), T0) == Answer(
        201, other.value.data, replayed=True
    )


# -- the API and the spec agree on which writes take a key --------------------------------


def test_the_writes_that_read_the_key_are_those_the_spec_documents_it_on() -> None:
    spec = load_spec()
    documented = {
        (method.upper(), path)
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if isinstance(op, dict)
        and {"$ref": "#/components/parameters/IdempotencyKey"} in op.get("parameters", [])
    }
    reading = {
        (method, route.path)
        for route in ROUTES
        for method in route.methods or ()
        if "idempotency_key(request)" in inspect.getsource(route.endpoint)
    }
    assert (
        reading
        == documented
        == {
            ("POST", "/desired-states"),
            ("POST", "/rollouts"),
            ("POST", "/tokens"),
        }
    )
    for module in {inspect.getmodule(route.endpoint) for route in ROUTES}:
        source = inspect.getsource(module)  # type: ignore[arg-type]
        assert '"idempotency-key"' not in source.lower(), "use context.idempotency_key()"


# -- the operator CLI ---------------------------------------------------------------------


def test_the_cli_resends_a_write_with_its_key_and_makes_a_new_key_per_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(connection, "RESEND_AFTER_S", 0.0)
    seen: list[str] = []
    lost = iter([True, False, True, True, True])

    def transport(req: httpx.Request) -> httpx.Response:
        seen.append(req.headers["idempotency-key"])
        if next(lost):
            raise httpx.ReadTimeout("the answer was lost", request=req)
        return httpx.Response(201, json={"data": {"ok": 1}, "metadata": {}})

    api = Api(Connection("http://127.0.0.1:1", "t"), timeout=1.0)
    api.http = httpx.Client(base_url="http://127.0.0.1:1", transport=httpx.MockTransport(transport))
    assert api.write("POST", "/desired-states", json_body={})["data"] == {"ok": 1}
    assert len(seen) == 2 and seen[0] == seen[1]
    with pytest.raises(connection.FleetError) as given_up:
        api.write("POST", "/desired-states", json_body={})
    assert given_up.value.exit_code == connection.UNREACHABLE
    assert len(seen) == 2 + connection.WRITE_ATTEMPTS
    assert len(set(seen[2:])) == 1 and seen[2] != seen[0]  # a new key per write


@pytest.mark.parametrize(("status", "resent"), [(503, True), (502, True), (409, False)])
def test_the_cli_resends_on_unavailable_answers_only(
    monkeypatch: pytest.MonkeyPatch, status: int, resent: bool
) -> None:
    monkeypatch.setattr(connection, "RESEND_AFTER_S", 0.0)
    seen: list[str] = []

    def transport(req: httpx.Request) -> httpx.Response:
        seen.append(req.headers["idempotency-key"])
        if len(seen) == 1:
            return httpx.Response(status, json={"error": {"code": "x", "message": "m"}})
        return httpx.Response(201, json={"data": {}, "metadata": {}})

    api = Api(Connection("http://127.0.0.1:1", "t"), timeout=1.0)
    api.http = httpx.Client(base_url="http://127.0.0.1:1", transport=httpx.MockTransport(transport))
    if resent:
        api.write("POST", "/tokens", json_body={})
        assert len(seen) == 2 and seen[0] == seen[1]
    else:
        with pytest.raises(connection.FleetError):
            api.write("POST", "/tokens", json_body={})
        assert len(seen) == 1


# -- the fleet simulator ------------------------------------------------------------------


def test_the_simulator_revokes_a_token_whose_answer_was_lost_and_asks_again() -> None:
    """Its token request is resent with its key; when the first was stored (the answer
    lost), the API names the token and shows no secret: the simulator revokes it and
    asks again under a new key, so the vehicle gets a token and no spare one stays valid."""
    issued: dict[str, str] = {}  # key -> token id, as the API keeps them
    revoked: list[str] = []
    lost = {"answer": True}

    def api(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/vehicles":
            return httpx.Response(201, json={"data": {}})
        if req.url.path.endswith("/revoke"):
            revoked.append(req.url.path.split("/")[2])
            return httpx.Response(200, json={"data": {}})
        key = req.headers["idempotency-key"]
        if key in issued:
            details = {"path": "header.Idempotency-Key", "tokenId": issued[key]}
            error = {"code": "conflict", "message": "issued", "details": details}
            return httpx.Response(409, json={"error": error})
        issued[key] = f"tok-{len(issued)}"
        if lost["answer"]:
            lost["answer"] = False
            raise httpx.ReadError("the connection dropped before the answer", request=req)
        return httpx.Response(201, json={"data": {"token": f"secret-{issued[key]}"}})

    fleet = SimFleet("http://cloud", FleetKeys.generate().config, SimProfile(),
                     operator_token="op")  # fmt: skip
    fleet.http = httpx.AsyncClient(transport=httpx.MockTransport(api))
    vehicle = SimVehicle("veh-1", "eu", "m3")
    asyncio.run(fleet.provision([vehicle]))
    assert vehicle.token == "secret-tok-1"
    assert revoked == ["tok-0"]
    assert len(set(issued)) == 2  # a new key for the second token
