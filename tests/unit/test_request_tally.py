"""The request tally (muto/cloud/request_tally.py) exposes what prometheus_client's own
Counter and Histogram would for the same requests: the same families, samples, labels
and values (the `_created` timestamps aside: each instrument takes its own)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from muto.cloud.metrics import LATENCY_BUCKETS
from muto.cloud.request_tally import LATENCY, REQUESTS, RequestTally

Request = tuple[str, str, int, float]
Sample = tuple[str, tuple[tuple[str, str], ...], float]
requests = st.lists(
    st.tuples(
        st.sampled_from(["/desired-states/latest", "/reports/health", "unmatched"]),
        st.sampled_from(["GET", "POST"]),
        st.sampled_from([200, 304, 404, 429]),
        # on the bounds too: a bucket counts what is at most its bound
        st.sampled_from(LATENCY_BUCKETS) | st.floats(0.0, 20.0, allow_nan=False),
    ),
    max_size=60,
)


def samples(registry: CollectorRegistry, created: bool) -> set[Sample]:
    return {
        (s.name, tuple(sorted(s.labels.items())), 0.0 if created else round(s.value, 9))
        for family in registry.collect()
        for s in family.samples
        if s.name.endswith("_created") == created
    }


def by_the_library(observed: list[Request]) -> CollectorRegistry:
    registry = CollectorRegistry()
    count = Counter(*REQUESTS, ["route", "method", "status"], registry=registry)
    latency = Histogram(*LATENCY, ["route", "method"], buckets=LATENCY_BUCKETS, registry=registry)
    for route, method, status, seconds in observed:
        count.labels(route, method, str(status)).inc()
        latency.labels(route, method).observe(seconds)
    return registry


def by_the_tally(observed: list[Request]) -> CollectorRegistry:
    registry = CollectorRegistry()
    tally = RequestTally(LATENCY_BUCKETS)
    registry.register(tally)
    for request in observed:
        tally.observe(*request)
    return registry


@given(requests)
def test_the_tally_exposes_what_the_librarys_instruments_would(observed: list[Request]) -> None:
    library, tally = by_the_library(observed), by_the_tally(observed)
    assert samples(tally, created=False) == samples(library, created=False)
    assert samples(tally, created=True) == samples(library, created=True)


def test_the_text_exposition_is_the_librarys() -> None:
    observed = [("/reports/health", "POST", 200, 0.004), ("/reports/health", "POST", 429, 0.05)]

    def text(registry: CollectorRegistry) -> list[str]:
        exposed = generate_latest(registry).decode().splitlines()
        return sorted(line for line in exposed if "_created" not in line)

    assert text(by_the_tally(observed)) == text(by_the_library(observed))
