"""Review of the API (2026-12), through the real server on SQLite and PostgreSQL: the
audit's `since`/`until` compare times whatever their offset (and refuse what is not one),
an unknown field is named in `details.path`, If-None-Match compares as RFC 9110 says
(weakly, a list, `*`) on the fast lane and in the app, and resuming a final rollout is
refused in resume's own words. Unit level: tests/unit/test_review_api_fixes.py."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, insert, select

from muto.cloud.queries.audit import since_clause, stamp, until_clause
from tests.support.api_server import BACKENDS, error_of, operator_client, unique, vehicle_body
from tests.support.releases import release_envelope
from tests.support.reported_fleet import ReportedFleet, ok

PLUS_ONE = timezone(timedelta(hours=1))
MINUS_FIVE = timezone(timedelta(hours=-5))


@pytest.fixture(scope="module", params=BACKENDS)
def op(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    with operator_client(request.param, tmp_path_factory.mktemp(request.param)) as client:
        yield client


def positions(op: httpx.Client, correlation: str, **times: datetime) -> list[int]:
    """The audit's entries of one correlation id, within the times given (sent in
    whatever offset they carry; httpx writes '+' as %2B)."""
    params = {"correlationId": correlation, **{k: v.isoformat() for k, v in times.items()}}
    return [e["position"] for e in ok(op.get("/audit", params=params))]


def test_the_audit_compares_times_not_their_text(op: httpx.Client) -> None:
    correlation, vehicle_id = unique("corr"), unique("audited")
    headers = {"X-Correlation-Id": correlation}
    ok(op.post("/vehicles", json=vehicle_body(vehicle_id), headers=headers), 201)
    for n in ("1", "2"):
        ok(op.patch(f"/vehicles/{vehicle_id}", json={"labels": {"x": n}}, headers=headers))
    entries = ok(op.get("/audit", params={"correlationId": correlation}))
    every = [e["position"] for e in entries]
    first, last = (datetime.fromisoformat(e["at"]) for e in (entries[0], entries[-1]))
    assert len(every) == 3 and first < last

    # The reviewer's cases: the same instants in other offsets (the text said "none").
    assert positions(op, correlation, since=first.astimezone(PLUS_ONE)) == every
    assert positions(op, correlation, until=last.astimezone(MINUS_FIVE)) == every
    # inclusive, to the microsecond, on both ends
    assert positions(op, correlation, until=first.astimezone(PLUS_ONE)) == every[:1]
    assert positions(op, correlation, since=last.astimezone(MINUS_FIVE)) == every[-1:]
    tick = timedelta(microseconds=1)
    assert positions(op, correlation, since=(first + tick).astimezone(MINUS_FIVE)) == every[1:]
    assert positions(op, correlation, until=(last - tick).astimezone(PLUS_ONE)) == every[:-1]
    # the ends of datetime's range, out of it once in UTC: everything, then nothing
    earliest = datetime(1, 1, 1, 0, 30, tzinfo=PLUS_ONE)
    latest = datetime(9999, 12, 31, 23, 30, tzinfo=timezone(timedelta(hours=-1)))
    assert positions(op, correlation, since=earliest, until=latest) == every
    assert positions(op, correlation, since=latest) == []


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("since", "garbage"),
        ("until", "yesterday"),
        ("since", "2026-12-05T16:00:00"),  # no offset: which instant?
        ("until", "2026-12-05"),
        ("since", "2026-12-05T17:00:00 01:00"),  # a '+' sent unescaped
    ],
)
def test_an_audit_time_that_is_not_one_is_a_422_naming_it(
    op: httpx.Client, name: str, value: str
) -> None:
    refused = error_of(op.get("/audit", params={name: value}), 422)
    assert refused["code"] == "invalid"
    assert refused["details"] == {"path": f"query.{name}"}


SHIFTS = [-1_000_000, -1, 0, 1, 250_000, 999_999, 1_000_000, 1_000_001]  # microseconds


@pytest.mark.postgres
@pytest.mark.parametrize("collation", ["C", "und-x-icu", "en-US-x-icu"])
def test_the_audit_bounds_hold_under_postgresql_collations(
    postgres_url: str, collation: str
) -> None:
    """The view's `at` is text in the database's default collation: ICU's (and glibc's
    en_US) order '.' before '+', C the other way round. The bounds hold under each."""
    base = datetime(2026, 12, 5, 16, 7, 1, tzinfo=UTC)
    times = {n: base + timedelta(microseconds=us) for n, us in enumerate(SHIFTS)}
    engine = create_engine(postgres_url)
    table = Table(
        "timeline",
        MetaData(),
        Column("n", Integer, primary_key=True),
        Column("at", String(40, collation=collation), index=True),
    )
    try:
        with engine.begin() as db:
            table.create(db)
            db.execute(insert(table), [{"n": n, "at": stamp(t)} for n, t in times.items()])
            for bound in times.values():
                for offset in (PLUS_ONE, MINUS_FIVE):
                    at = bound.astimezone(offset)
                    since = select(table.c.n).where(since_clause(table.c.at, at))
                    until = select(table.c.n).where(until_clause(table.c.at, at))
                    assert set(db.scalars(since)) == {n for n, t in times.items() if t >= at}
                    assert set(db.scalars(until)) == {n for n, t in times.items() if t <= at}
    finally:
        engine.dispose()


def test_an_unknown_field_is_named_by_its_own_path(op: httpx.Client) -> None:
    vehicle = op.post("/vehicles", json={"vehicleId": unique("v"), "bogus": 1})
    assert error_of(vehicle, 422)["details"] == {"path": "$.bogus"}
    desired = op.post(
        "/desired-states",
        json={
            "target": {"selector": "model=m3"},
            "stack": {"name": "core", "version": "1.0.0"},
            "policy": {"bogus": 1},
        },
    )
    assert error_of(desired, 422)["details"] == {"path": "$.policy.bogus"}


def test_if_none_match_compares_weakly_a_list_and_star(op: httpx.Client) -> None:
    vehicle_id, stack = unique("polled"), unique("stack")
    ok(op.post("/vehicles", json=vehicle_body(vehicle_id)), 201)
    ok(op.post("/releases", json=release_envelope(stack)), 201)
    target = {"type": "vehicle", "vehicleId": vehicle_id}
    body = {"target": target, "stack": {"name": stack, "version": "1.0.0"}}
    ok(op.post("/desired-states", json=body), 201)
    fetched = op.get("/desired-states/latest", params={"vehicleId": vehicle_id})
    etag = fetched.headers["etag"]
    # `vehicleId=` alone may be answered by the fast lane (the ETag is remembered now);
    # another parameter takes the app's handler: both compare the same way
    for params in ({"vehicleId": vehicle_id}, {"vehicleId": vehicle_id, "x": "1"}):
        for header, status in (
            (etag, 304),
            (f"W/{etag}", 304),
            (f'"0-other", {etag}', 304),
            (f'W/"0-other",W/{etag}', 304),
            ("*", 304),
            ('"0-other"', 200),
            (f"w/{etag}", 200),  # not an entity-tag: matches nothing
        ):
            polled = op.get(
                "/desired-states/latest", params=params, headers={"If-None-Match": header}
            )
            assert polled.status_code == status, (params, header, polled.text)
            assert polled.headers["etag"] == etag
    # `*` matches a current representation only: none, none to match
    nothing = unique("unassigned")
    ok(op.post("/vehicles", json=vehicle_body(nothing)), 201)
    unassigned = op.get(
        "/desired-states/latest", params={"vehicleId": nothing}, headers={"If-None-Match": "*"}
    )
    assert error_of(unassigned, 404)["code"] == "not_found"


def test_resuming_a_final_rollout_is_refused_in_its_own_words(op: httpx.Client) -> None:
    fleet = ReportedFleet(op)
    rollout_id = fleet.start("2.0.0")["rolloutId"]
    ok(op.post(f"/rollouts/{rollout_id}/rollback"))
    resumed = error_of(op.post(f"/rollouts/{rollout_id}/resume"), 409)
    paused = error_of(op.post(f"/rollouts/{rollout_id}/pause"), 409)
    assert resumed["code"] == paused["code"] == "rollout_final"
    assert "resume" in resumed["message"] and "pause" not in resumed["message"]
    assert "paused" in paused["message"]
