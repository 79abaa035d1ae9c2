"""Review of the API (2026-12): an unknown field is named in `details.path`, the audit's
time filters compare times, If-None-Match compares as RFC 9110 says, and resuming a
final rollout is refused in resume's own words. The same through the real server, on
SQLite and PostgreSQL: tests/integration/test_api_review_fixes.py."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace
from uuid import uuid4

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import (
    Column,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    delete,
    insert,
    select,
)
from sqlalchemy.event import listen
from starlette.requests import Request

from muto.cloud.api.audit import time_param
from muto.cloud.api.desired import asked_etags
from muto.cloud.errors import Invalid
from muto.cloud.queries.audit import since_clause, stamp, until_clause
from muto.domain.desired import DesiredStateRequest
from muto.domain.events import RolloutPolicy
from muto.domain.model.rollout import Rollout, RolloutFinal
from muto.domain.requests import RolloutThresholds, VehicleRegistration
from muto.domain.wire import WireError, decode
from muto.projections.audit import AuditTimeline

# -- unknown fields -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "body", "path"),
    [
        (VehicleRegistration, b'{"vehicleId":"v-x","bogus":1}', "$.bogus"),
        (
            DesiredStateRequest,
            b'{"target":{"selector":"model=m3"},"stack":{"name":"core","version":"1"},'
            b'"policy":{"bogus":1}}',
            "$.policy.bogus",
        ),
        # the whole-number retry (3600.0) names it too
        (VehicleRegistration, b'{"vehicleId":"v-x","n":1.0,"bogus":2}', "$.n"),
        # unchanged: a missing field, a wrong type
        (VehicleRegistration, b"{}", "$.vehicleId"),
        (VehicleRegistration, b'{"vehicleId":1}', "$.vehicleId"),
    ],
)
def test_a_refused_field_is_named_by_its_own_path(kind: type, body: bytes, path: str) -> None:
    with pytest.raises(WireError) as refused:
        decode(body, kind)
    assert refused.value.path == path


def test_an_unknown_field_named_like_a_path_is_still_the_field() -> None:
    """The path is read from the end of msgspec's message: the name is the caller's."""
    with pytest.raises(WireError) as refused:
        decode(b'{"vehicleId":"v-x","`$.labels`":1}', VehicleRegistration)
    assert refused.value.path == "$.`$.labels`"


# -- the audit's time filters ---------------------------------------------------------------

# The collations the bounds must hold under: SQLite's own (bytes: '+' < '.'), and one
# that orders '.' before '+' as ICU and glibc's en_US do (PostgreSQL's usual defaults).
DOT_FIRST = str.maketrans({".": "\x01", "+": "\x02"})


def dot_first(a: str, b: str) -> int:
    ka, kb = a.translate(DOT_FIRST), b.translate(DOT_FIRST)
    return (ka > kb) - (ka < kb)


@pytest.fixture(scope="module")
def timeline() -> Iterator[tuple[Engine, Table]]:
    engine = create_engine("sqlite://")
    listen(engine, "connect", lambda dbapi, _: dbapi.create_collation("dot_first", dot_first))
    table = Table(
        "timeline",
        MetaData(),
        Column("n", Integer, primary_key=True),
        Column("bytes", String(40)),
        Column("dot_first", String(40, collation="dot_first")),
    )
    table.create(engine)
    yield engine, table
    engine.dispose()


BASE = datetime(2026, 12, 5, 16, 7, 1, tzinfo=UTC)
# Microseconds from BASE: the interesting ones are within a second of each other.
near = st.sampled_from([-1_000_000, -1, 0, 1, 250_000, 999_999, 1_000_000, 1_000_001])
shifts = near | st.integers(-3_000_000, 3_000_000)
offsets = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))


@given(st.lists(shifts, min_size=1, max_size=8, unique=True), shifts, offsets)
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_since_and_until_compare_times_whatever_the_collation(
    timeline: tuple[Engine, Table], stored: list[int], bound: int, offset: timezone
) -> None:
    """What `since`/`until` rely on: the view's text, compared by the clauses, selects
    what comparing the times would, the bound in any offset, with or without a fraction
    of a second on either side, under either order of '+' and '.'."""
    engine, table = timeline
    times = {n: BASE + timedelta(microseconds=us) for n, us in enumerate(stored)}
    at = (BASE + timedelta(microseconds=bound)).astimezone(offset)
    with engine.begin() as db:
        db.execute(delete(table))
        db.execute(
            insert(table),
            [{"n": n, "bytes": stamp(t), "dot_first": stamp(t)} for n, t in times.items()],
        )
        for column in (table.c.bytes, table.c.dot_first):
            since = select(table.c.n).where(since_clause(column, at))
            until = select(table.c.n).where(until_clause(column, at))
            assert set(db.scalars(since)) == {n for n, t in times.items() if t >= at}
            assert set(db.scalars(until)) == {n for n, t in times.items() if t <= at}


def test_a_stamp_is_written_as_the_audit_view_writes_event_times() -> None:
    view = AuditTimeline(MetaData())
    for at in (
        datetime(2026, 12, 5, 16, 7, 1, 250, tzinfo=UTC),
        datetime(2026, 12, 5, 16, 7, 2, tzinfo=UTC),  # no fraction
    ):
        event = SimpleNamespace(
            timestamp=at, originator_id=uuid4(), originator_version=1, vehicle_id="v"
        )
        view.apply(None, event, 1)  # type: ignore[arg-type]
        assert view._pending[-1][1] == stamp(at.astimezone(timezone(timedelta(hours=-5))))


def test_a_time_out_of_range_once_in_utc_is_beyond_every_stored_time() -> None:
    earliest = datetime(1, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1)))
    latest = datetime(9999, 12, 31, 23, 30, tzinfo=timezone(timedelta(hours=-1)))
    assert stamp(earliest) <= "0001-01-01T00:00:00+00:00"
    assert stamp(latest) >= "9999-12-31T23:59:59.999999+00:00"


def query(text: bytes) -> Request:
    return Request({"type": "http", "query_string": text, "headers": []})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"since=2026-12-05T17:00:00%2B01:00", datetime(2026, 12, 5, 16, tzinfo=UTC)),
        (b"since=2026-12-05T16:00:00Z", datetime(2026, 12, 5, 16, tzinfo=UTC)),
        (b"since=2026-12-05t16:00:00.5z", datetime(2026, 12, 5, 16, 0, 0, 500000, tzinfo=UTC)),
        (b"until=x", None),
    ],
)
def test_a_query_time_is_read_with_its_offset(text: bytes, expected: datetime | None) -> None:
    assert time_param(query(text), "since") == expected


@pytest.mark.parametrize(
    "text",
    [
        "garbage",
        "yesterday",
        "",
        "2026-12-05",
        "2026-12-05T16:00:00",  # no offset: which instant?
        "2026-12-05T16:00:60Z",
        "1" * 10_000,
    ],
)
def test_a_query_time_without_offset_or_malformed_is_a_422_naming_it(text: str) -> None:
    with pytest.raises(Invalid) as refused:
        time_param(query(b"until=" + text.encode()), "until")
    assert refused.value.details == {"path": "query.until"}


def test_an_unescaped_plus_is_pointed_out() -> None:
    with pytest.raises(Invalid) as refused:
        time_param(query(b"since=2026-12-05T17:00:00+01:00"), "since")
    assert "%2B" in refused.value.message


# -- If-None-Match ------------------------------------------------------------------------

ETAG = '"7-0123456789abcdef0123"'


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        (ETAG, True),
        (f"W/{ETAG}", True),  # weak comparison (RFC 9110 13.1.2)
        (f'"6-x", {ETAG}', True),
        (f'W/"6-x",W/{ETAG}', True),
        ("*", True),
        (" * ", True),
        ('"6-x"', False),
        ('"6-x", W/"7-x"', False),
        ('"7-0123456789abcdef0123', False),  # unterminated
        (f'"6-x", , {ETAG} ,', True),  # empty list elements are allowed
        ('"6,x", W/"7"', False),  # an opaque tag may hold a comma
        (f"w/{ETAG}", False),  # not a list of entity-tags: matches nothing
        (f"{ETAG}x", False),
        ("", False),
        (None, False),
    ],
)
def test_if_none_match_compares_weakly_any_tag_of_a_list_and_star(
    header: str | None, matches: bool
) -> None:
    assert (ETAG in asked_etags(header)) is matches


# -- resume of a final rollout ------------------------------------------------------------


def test_resuming_a_final_rollout_is_refused_in_its_own_words() -> None:
    rollout = Rollout(
        rollout_id="ro-1",
        selector="model=m3",
        release_key="core@2.0.0",
        manifest_digest="sha256:" + "1" * 64,
        policy=RolloutPolicy(),
        thresholds=RolloutThresholds(converged_pct=95.0, canary_deadline_sec=1800.0),
        canaries=["c1"],
        wave=["w1"],
        previous_releases={"c1": "core@1.0.0", "w1": None},
        started_at="2026-01-01T00:00:00+00:00",
        actor="operator:test",
        correlation_id="c",
    )
    rollout.record_rolled_back("rev-back", ["c1"], "OPERATOR_ROLLBACK", "operator:test", "c")
    with pytest.raises(RolloutFinal) as resumed:
        rollout.resume("operator:test", "c")
    with pytest.raises(RolloutFinal) as paused:
        rollout.pause("operator:test", "c")
    assert "resume" in str(resumed.value) and "pause" not in str(resumed.value)
    assert "paused" in str(paused.value)
    assert resumed.value.code == paused.value.code == "rollout_final"
