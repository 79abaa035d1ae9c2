"""FleetKeys: fresh keys for a throwaway trust root (tests, benchmarks), and the
TrustConfig a vehicle holds for them: k of the n release keys open a release."""

from __future__ import annotations

import pytest

from muto.domain.errors import ReasonError
from muto.trust import FleetKeys, open_release, sign_release
from tests.support.trust_kit import a_release


def test_threshold_of_the_release_keys_open_a_release() -> None:
    keys = FleetKeys.generate(releasers=3, threshold=2)
    trusted = keys.config.release_keys
    assert (len(trusted.keys), trusted.threshold) == (3, 2)
    assert keys.config.control_plane_keys.keys == [keys.control.public_pem]
    release = a_release()
    assert open_release(sign_release(release, keys.release_keys[1:]), trusted)[0] == release
    with pytest.raises(ReasonError):
        open_release(sign_release(release, keys.release_keys[:1]), trusted)


def test_each_root_is_fresh() -> None:
    one, other = FleetKeys.generate(), FleetKeys.generate()
    envelope = sign_release(a_release(), one.release_keys)
    with pytest.raises(ReasonError):
        open_release(envelope, other.config.release_keys)
