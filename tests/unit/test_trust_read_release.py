"""One home for opening a DSSE envelope: the control plane's unchecked read of a release
(no release keys configured) is the checked one without the signatures, so both refuse
a malformed envelope alike and give the same release and digest."""

from __future__ import annotations

import msgspec
import pytest

from muto.domain.reasons import ReasonCode
from muto.domain.wire import WireError
from muto.trust import open_release
from muto.trust.dsse import DESIRED_STATE_TYPE, EnvelopeError
from muto.trust.releases import read_release, sign_release
from tests.support.trust_kit import Fleet, a_release, unsigned

FLEET = Fleet()
SIGNED = sign_release(a_release(), FLEET.release_keys[:2])
replace = msgspec.structs.replace


def test_the_unchecked_read_gives_what_the_checked_open_gives() -> None:
    assert read_release(SIGNED) == open_release(SIGNED, FLEET.config.release_keys)
    assert read_release(unsigned(SIGNED)) == read_release(SIGNED)  # signatures unread


@pytest.mark.parametrize(
    "payload",
    ["%%%", SIGNED.payload.rstrip("=") + "A", "A" * ((1 << 20) + 4)],
    ids=["not base64", "not canonical", "too large"],
)
def test_a_malformed_payload_is_named(payload: str) -> None:
    for opened in (
        lambda e: read_release(e),
        lambda e: open_release(e, FLEET.config.release_keys),
    ):
        with pytest.raises(EnvelopeError) as caught:
            opened(replace(SIGNED, payload=payload))
        assert caught.value.path == "$.payload"
        assert caught.value.code is ReasonCode.VERIFY_SIGNATURE_FAILED


def test_another_documents_envelope_is_no_release() -> None:
    with pytest.raises(EnvelopeError) as caught:
        read_release(replace(SIGNED, payload_type=DESIRED_STATE_TYPE))
    assert caught.value.path is None  # not a field's encoding: a signature failure


def test_a_payload_that_is_no_release_names_its_field() -> None:
    other = replace(SIGNED, payload="eyJ2ZXJzaW9uIjogMX0=")  # {"version": 1}
    with pytest.raises(WireError) as caught:
        read_release(other)
    assert caught.value.path is not None
