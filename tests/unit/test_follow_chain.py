"""rotation.follow_chain, the one walk of the release key chain (the vehicles' intake and
the control plane's keys in force), with plain data: generated chains, keys provisioned
at any point of them (at version 1, as `muto agent trust` writes them), forged rotations
inserted anywhere.

Whatever the chain: every rotation applied is one `apply_key_rotation` accepts on the
keys before it (the current keys' threshold and its own), so a forged one is never
applied; the walk passes over a rotation it cannot follow, says which, and goes on (a
later rotation the keys in force signed still applies); keys provisioned at a later set
of the chain fast-forward to its version and follow the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from muto.domain.desired import Envelope
from muto.domain.reasons import ReasonCode
from muto.trust import KeySet, Signer, TrustConfig
from muto.trust.rotation import (
    KeyRotation,
    apply_key_rotation,
    follow_chain,
    read_key_rotation,
    sign_key_rotation,
)
from tests.support.releases import signed, stack_release

POOL = [Signer.generate() for _ in range(5)]  # the fleet's key holders, over the years
THIEF = Signer.generate()  # holds none of the fleet's keys
CONTROL = KeySet(keys=[Signer.generate().public_pem])


@dataclass(frozen=True)
class Set:
    """A key set of the chain: which of POOL, and how many must sign."""

    members: tuple[int, ...]
    threshold: int

    @property
    def keys(self) -> KeySet:
        return KeySet(keys=[POOL[i].public_pem for i in self.members], threshold=self.threshold)

    def signers(self) -> list[Signer]:
        return [POOL[i] for i in self.members[: self.threshold]]


def rotate(version: int, to: Set, by: Sequence[Signer]) -> Envelope:
    return sign_key_rotation(KeyRotation(version=version, release_keys=to.keys), by)


def trusting(keys: Set, version: int = 1) -> TrustConfig:
    return TrustConfig(
        release_keys=keys.keys, release_keys_version=version, control_plane_keys=CONTROL
    )


def named(config: TrustConfig) -> tuple[frozenset[str], int]:
    return frozenset(config.release_keys.trusted()), config.release_keys.threshold


key_sets = st.builds(
    lambda members, k: Set(tuple(sorted(members)), min(k, len(members))),
    st.sets(st.integers(0, len(POOL) - 1), min_size=1, max_size=3),
    st.integers(1, 3),
)


@dataclass(frozen=True)
class Chain:
    """Genuine sets (the first as provisioned, version 1) and the rotations to each next
    one, each signed by the set before it and by its own, at their thresholds."""

    sets: list[Set]
    versions: list[int]  # versions[i]: the version of sets[i]
    rotations: list[Envelope]  # rotations[i]: to sets[i + 1]


@st.composite
def chains(draw: st.DrawFn) -> Chain:
    sets = draw(st.lists(key_sets, min_size=1, max_size=5))
    steps = draw(st.lists(st.integers(1, 3), min_size=len(sets) - 1, max_size=len(sets) - 1))
    versions = [1]
    for step in steps:
        versions.append(versions[-1] + step)
    rotations = [
        rotate(versions[i + 1], sets[i + 1], [*sets[i].signers(), *sets[i + 1].signers()])
        for i in range(len(sets) - 1)
    ]
    return Chain(sets, versions, rotations)


@st.composite
def forgeries(draw: st.DrawFn) -> Envelope:
    """Not signed by any key of the fleet: a thief's set, or one of the fleet's sets
    (its own keys and threshold, the fast-forward's shape) signed by the thief, or a
    release passed off as a rotation."""
    kind = draw(st.sampled_from(["thief", "fleet-set", "not-a-rotation"]))
    version = draw(st.integers(2, 20))
    if kind == "not-a-rotation":
        return signed(stack_release("app", "1.0.0"), POOL[0]).envelope
    to = KeySet(keys=[THIEF.public_pem])
    if kind == "fleet-set":
        to = draw(key_sets).keys
    return sign_key_rotation(KeyRotation(version=version, release_keys=to), [THIEF])


def replayed(start: TrustConfig, applied: Sequence[Envelope]) -> TrustConfig:
    """The invariant: each applied rotation is accepted on the config before it."""
    config = start
    for envelope in applied:
        config = apply_key_rotation(config, envelope)
    return config


SLOW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SLOW
@given(chain=chains(), data=st.data())
def test_keys_provisioned_anywhere_on_the_chain_follow_it_to_its_end(
    chain: Chain, data: st.DataObject
) -> None:
    """Provisioned with any set of the chain, at version 1 (set up today) or at its own
    version (walked there): the walk ends at the last set and its version."""
    at = data.draw(st.integers(0, len(chain.sets) - 1))
    version = data.draw(st.sampled_from([1, chain.versions[at]]))
    start = trusting(chain.sets[at], version)
    config, applied, refused = follow_chain(start, chain.rotations)
    assert refused is None
    assert named(config) == named(trusting(chain.sets[-1]))
    assert config.release_keys_version == max(chain.versions[-1], version)
    assert replayed(start, applied) == config


@SLOW
@given(chain=chains(), data=st.data())
def test_a_forged_rotation_is_never_applied_and_never_stops_the_walk(
    chain: Chain, data: st.DataObject
) -> None:
    at = data.draw(st.integers(0, len(chain.sets) - 1))
    start = trusting(chain.sets[at])
    forged = data.draw(st.lists(forgeries(), min_size=1, max_size=3))
    published = list(chain.rotations)
    for envelope in forged:
        published.insert(data.draw(st.integers(0, len(published))), envelope)
    config, applied, refused = follow_chain(start, published)
    assert all(envelope in chain.rotations for envelope in applied)  # never a forged one
    assert replayed(start, applied) == config
    assert named(config) == named(trusting(chain.sets[-1]))  # the genuine chain's end
    assert config.release_keys_version == chain.versions[-1]
    if refused is not None:  # a forgery the keys in force have not passed
        assert refused.envelope in forged
        assert refused.error.code in (ReasonCode.VERIFY_SIGNATURE_FAILED,)
        assert refused.version is None or refused.version > config.release_keys_version


def test_the_reviewers_chain_is_followed_from_any_of_its_sets() -> None:
    """v2 {b} signed by a and b, v3 {c} signed by b and c: keys c set up today (version
    1) fast-forward to 3; b to 2 then walk to 3; a walks both."""
    a, b, c = (Set((i,), 1) for i in range(3))
    chain = [rotate(2, b, [POOL[0], POOL[1]]), rotate(3, c, [POOL[1], POOL[2]])]
    for provisioned, took in ((a, [2, 3]), (b, [2, 3]), (c, [3])):
        config, applied, refused = follow_chain(trusting(provisioned), chain)
        assert refused is None and config.release_keys_version == 3
        assert named(config) == named(trusting(c))
        assert [read_key_rotation(e).version for e in applied] == took


def test_a_fast_forward_needs_the_keys_own_signatures() -> None:
    """A rotation to the vehicle's very keys at a high version, signed by a thief: taken
    on its word it would raise the version past every genuine rotation to come, and the
    vehicle would never follow them. It is refused, and the genuine one still applies."""
    a, b = Set((0,), 1), Set((1,), 1)
    lie = sign_key_rotation(KeyRotation(version=99, release_keys=a.keys), [THIEF])
    genuine = rotate(2, b, [POOL[0], POOL[1]])
    for published in ([lie, genuine], [genuine, lie]):
        config, applied, refused = follow_chain(trusting(a), published)
        assert (config.release_keys_version, applied) == (2, [genuine])
        assert refused is not None and refused.envelope is lie  # 99 > 2: judged, refused


def test_a_rotation_the_fleet_could_not_follow_is_passed_over_by_the_way_back() -> None:
    """The cloud's threshold (1) below the vehicles' (2): rotation 2 to {c}, signed by one
    key of {a, b} and by c, is refused by every vehicle, which stays on {a, b}. Rotation
    3 to {d}, signed by c (the cloud's keys in force), by a and b (the vehicles') and by
    d, takes both the vehicles that refused 2 and any that followed it to d."""
    ab, c, d = Set((0, 1), 2), Set((2,), 1), Set((3,), 1)
    two = rotate(2, c, [POOL[0], POOL[2]])
    back = rotate(3, d, [POOL[2], POOL[0], POOL[1], POOL[3]])
    config, applied, refused = follow_chain(trusting(ab), [two])
    assert (config.release_keys_version, applied) == (1, [])
    assert refused is not None and refused.envelope is two and refused.version == 2
    for start in (trusting(ab), trusting(c, version=2)):
        config, applied, refused = follow_chain(start, [two, back])
        assert config.release_keys_version == 3 and named(config) == named(trusting(d))
        assert applied == [back] and refused is None  # 2 is behind the keys in force
    onward = rotate(4, Set((4,), 1), [POOL[3], POOL[4]])  # by d: the chain goes on from 3
    config, applied, refused = follow_chain(trusting(ab), [two, back, onward])
    assert config.release_keys_version == 4 and applied == [back, onward]
