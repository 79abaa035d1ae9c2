"""Fuzzing the wire decoders (#14): every decoder an untrusted byte string reaches (HTTP
bodies, MQTT payloads both ways, the desired-state bundle and the documents inside its
envelopes, the agent's reading of a poll's answer) only ever raises the documented
WireError, whatever the bytes: random bytes, valid payloads with one value replaced by
any JSON value, a key dropped or added, deep nesting, huge or integral-float numbers,
truncated or byte-flipped encodings.

`make test` runs a bounded number of examples per decoder; `make test-faults`
(MUTO_FAULT_RUNS=full) many more.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from muto.agent.transport.http import Fetched, _fetched
from muto.cloud.api.schema import REQUEST_BODIES
from muto.domain.desired import DesiredStateBundle, DesiredStateDocument, Envelope
from muto.domain.messages import TOPICS
from muto.domain.release import StackRelease
from muto.domain.wire import WireError, decode, to_builtins
from muto.trust.keys import Signer
from muto.trust.rotation import KeyRotation
from tests.faults.runs import runs
from tests.support.releases import signed_release
from tests.support.specs import minimal
from tests.support.spine import health_report, reconcile_report

SIGNED = signed_release()
ENVELOPE = to_builtins(SIGNED.envelope)

# A valid example of each decoder's input: the fuzzer's starting points.
SAMPLES: dict[type[Any], dict[str, Any]] = {
    **{spec.payload: to_builtins(minimal(spec.payload)) for spec in TOPICS.values()},
    type(reconcile_report("v1", "r")): to_builtins(reconcile_report("v1", "r")),
    type(health_report("v1", "h", "healthy")): to_builtins(  # type: ignore[arg-type]
        health_report("v1", "h", "healthy")  # type: ignore[arg-type]
    ),
    StackRelease: to_builtins(SIGNED.release),
    Envelope: ENVELOPE,
    DesiredStateBundle: {
        "schema": "muto.desired-state-bundle.v1",
        "desiredState": ENVELOPE,
        "release": ENVELOPE,
    },
    DesiredStateDocument: {
        "schema": "muto.desired-state.v1",
        "vehicleId": "v1",
        "revision": "dsr_1",
        "sequence": 1,
        "stack": {"name": "core", "version": "1.0.0"},
        "policy": {"applyWindow": {"startLocal": "22:00", "endLocal": "04:00"}},
        "agentConfig": {},
        "correlationId": "c",
        "issuedAt": "2026-01-01T00:00:00Z",
        "expiresAt": "2026-02-01T00:00:00Z",
    },
    KeyRotation: {
        "schema": "muto.key-rotation.v1",
        "version": 2,
        "releaseKeys": {"keys": [Signer.generate().public_pem]},
    },
}
for kind, sample in {
    "VehicleRegistration": {"vehicleId": "v1", "labels": {"model": "m3"}, "attributes": {}},
    "VehiclePatch": {"labels": {"ring": None}},
    "Envelope": ENVELOPE,
    "DesiredStateRequest": {
        "target": {"type": "fleetSelector", "selector": "region=eu"},
        "stack": {"name": "core", "version": "1.0.0"},
        "ttlSec": 3600.0,
    },
    "ReconcileReport": SAMPLES[type(reconcile_report("v1", "r"))],
    "HealthReport": SAMPLES[type(health_report("v1", "h", "healthy"))],  # type: ignore[arg-type]
    "RolloutRequest": {"selector": "region=eu", "stack": "core", "version": "1.0.0"},
    "TokenRequest": {"role": "vehicle", "vehicleId": "v1"},
}.items():
    SAMPLES[next(k for k in REQUEST_BODIES if k.__name__ == kind)] = sample

DECODERS = sorted(SAMPLES, key=lambda k: k.__name__)

NUMBERS = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, 1.0, 5.0, 3600.0, 1e300, -1e300, 2.0**63, 2.0**64]),
)
SCALARS = st.one_of(
    st.none(), st.booleans(), NUMBERS, st.text(max_size=40), st.sampled_from(["\n", "\x00"])
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=30,
)


NEST = "\u0000nest\u0000"


def _paths(node: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [at]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*at, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _paths(value, (*at, i))
    return found


def _replace(node: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(node, dict):
        return {**node, head: _replace(node[head], rest, value)}
    copy = list(node)
    copy[head] = _replace(copy[head], rest, value)
    return copy


@st.composite
def payloads(draw: st.DrawFn, kind: type[Any]) -> bytes:
    """Bytes for `kind`'s decoder: near a valid payload, or anything at all."""
    sample = SAMPLES[kind]
    how = draw(st.sampled_from(["replace", "drop", "add", "nest", "bytes", "flip", "cut"]))
    if how == "bytes":
        return draw(st.binary(max_size=200))
    if how in ("flip", "cut"):
        data = bytearray(msgspec.json.encode(sample))
        at = draw(st.integers(0, len(data) - 1))
        if how == "cut":
            return bytes(data[:at])
        data[at] = draw(st.integers(0, 255))
        return bytes(data)
    path = draw(st.sampled_from(_paths(sample)))
    if how == "replace":
        document = _replace(sample, path, draw(JSON))
    elif how == "nest":  # spliced in as text: Python's json cannot build it that deep
        depth = draw(st.integers(1, 3000))
        text = json.dumps(_replace(sample, path, NEST)).encode()
        return text.replace(json.dumps(NEST).encode(), b"[" * depth + b"1.0" + b"]" * depth)
    else:
        parents = [p for p in _paths(sample) if isinstance(_at(sample, p), dict)]
        parent = draw(st.sampled_from(parents))
        node = dict(_at(sample, parent))
        if how == "drop" and node:
            node.pop(draw(st.sampled_from(sorted(node))))
        else:
            node[draw(st.text(max_size=12))] = draw(JSON)
        document = _replace(sample, parent, node)
    return json.dumps(document).encode()


def _at(node: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        node = node[step]
    return node


def test_every_sample_decodes() -> None:
    """The starting points are valid, so mutations explore the edges, not the void."""
    for kind in DECODERS:
        decode(msgspec.json.encode(SAMPLES[kind]), kind)


@pytest.mark.parametrize("count", runs(60, 3000))
@pytest.mark.parametrize("kind", DECODERS, ids=lambda k: k.__name__)
def test_a_decoder_raises_only_wire_error(kind: type[Any], count: int) -> None:
    @settings(
        max_examples=count,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(payloads(kind))
    def fuzz(data: bytes) -> None:
        try:
            decoded = decode(data, kind)
        except WireError as exc:
            assert exc.message
            assert exc.path is None or exc.path.startswith("$")
            return
        assert isinstance(decoded, kind)

    fuzz()


@pytest.mark.parametrize("count", runs(100, 5000))
def test_the_agent_reads_any_answer_to_a_poll_as_a_value(count: int) -> None:
    """GET /desired-states/latest's body: a Fetched (with `problem` when it did not
    decode), never an exception."""
    bundle = SAMPLES[DesiredStateBundle]

    @settings(
        max_examples=count,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        st.one_of(
            st.binary(max_size=200),
            st.builds(
                lambda data, meta: json.dumps({"data": data, "metadata": meta}).encode(),
                st.one_of(JSON, st.just(bundle)),
                st.one_of(JSON, st.just({"revision": "dsr_1", "sequence": 1})),
            ),
        )
    )
    def fuzz(body: bytes) -> None:
        found = _fetched(body, '"1-ab"')
        assert isinstance(found, Fetched)
        assert (found.bundle is None) == (found.problem is not None)

    fuzz()
