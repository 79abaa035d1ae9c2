"""The control plane's rules for signed documents: the key it signs desired states
with, how it opens a release an operator registers, and the release keys in force:
the configured ones (`--release-key`, key set version 1, or the later set of the chain
they are) with every later published KeyRotation applied in order, walked as a vehicle
walks it (rotation.follow_chain; docs/trust.md, "Rotating release keys")."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

from muto.cloud.errors import Conflict
from muto.cloud.settings import Settings, named
from muto.domain.desired import DesiredStateDocument, Envelope, Signature
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.domain.release import StackRelease
from muto.domain.wire import WireError
from muto.trust.config import TrustConfig
from muto.trust.desired_state import sign_desired_state
from muto.trust.dsse import KEY_ROTATION_TYPE, RELEASE_TYPE, EnvelopeError, open_envelope
from muto.trust.keys import Signer, load_or_create_key_pair
from muto.trust.keyset import KeySet, keyset_from_files
from muto.trust.releases import open_release, read_release
from muto.trust.rotation import (
    KeyRotation,
    apply_key_rotation,
    decode_key_rotation,
    follow_chain,
    read_key_rotation,
)

CONTROL_PLANE_KEY = "control-plane.key"


def control_plane_signer(settings: Settings) -> Signer:
    """The key that signs desired-state documents: kept in the data dir, created once.
    Vehicles trust its public half (keys/control-plane.pub)."""
    if settings.is_memory:
        return Signer.generate()
    keys = settings.data_dir / "keys"
    private = keys / CONTROL_PLANE_KEY
    if not private.exists() and settings.role != "all":
        # Replicas that each made a key of their own would sign with keys the vehicles
        # do not all trust: a deployment of several processes is given one key.
        raise FileNotFoundError(
            f"{private}: the control-plane signing key is missing; --role "
            f"{settings.role} processes share one key (a Kubernetes Secret, docs/deploy.md)"
        )
    return load_or_create_key_pair(private, keys / "control-plane.pub")


def release_keyset(settings: Settings) -> KeySet | None:
    """The release keys a registered release is verified against, `release_threshold`
    of them (None: no keys configured). ValueError naming the option: a key file that
    cannot be read or is not a public key, or a threshold above the distinct keys (a
    key listed twice counts once, as on the vehicles)."""
    k, option = settings.release_threshold, named("release_threshold")
    if not settings.release_keys:
        if k > 1:
            raise ValueError(f"{option} {k} needs release keys (--release-key); none given")
        return None
    return keyset_from_files(settings.release_keys, k, "--release-key", option, "release key")


class InForce(NamedTuple):
    """The release keys in force and their key set version (1: none rotated yet)."""

    keys: KeySet
    version: int


# Verdicts kept (release, its count of added signatures, the key set): a bound, not a policy.
MAX_VERDICTS = 65_536


class Signing:
    """Signs desired states with the control plane's key; opens registered releases and
    judges releases assigned or rolled out (verified against the release keys in force
    when the operator configured any: `configured`, then the published rotations,
    which `rotations` gives, oldest first; bootstrap wires it to caches.rotations)."""

    def __init__(self, signer: Signer, release_keys: KeySet | None) -> None:
        self.signer = signer
        self.configured = release_keys
        self.rotations: Callable[[], list[Envelope]] = list
        self._in_force: tuple[tuple[int, str], InForce] | None = None
        self._verdicts: dict[tuple[str, int, int], str | None] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> Signing:
        return cls(control_plane_signer(settings), release_keyset(settings))

    @property
    def release_keys(self) -> KeySet | None:
        """The release keys a release is verified against now (None: none configured,
        nothing is checked). VERIFY_SIGNATURE_FAILED if the configured keys do not open
        the published rotations (the cloud was configured with keys off the chain)."""
        return None if self.configured is None else self.in_force().keys

    def in_force(self, published: Sequence[Envelope] | None = None) -> InForce:
        """The configured keys followed along `published` (default: every published
        rotation) as a vehicle provisioned with them follows it (rotation.follow_chain).
        VERIFY_SIGNATURE_FAILED naming the rotation where they stop: a vehicle would
        stop there too, but every rotation published here was checked against the keys
        in force, so keys off the chain are the likely cause. Kept for the chain it was
        computed from: published rotations never change, only more are added."""
        assert self.configured is not None
        chain = list(self.rotations() if published is None else published)
        mark = (len(chain), chain[-1].payload if chain else "")
        kept = self._in_force
        if kept is not None and kept[0] == mark:
            return kept[1]
        config, _, refused = follow_chain(self._trusting(self.configured, 1), chain)
        if refused is not None:
            raise ReasonError(
                refused.error.code,
                "the release keys configured (--release-key, --release-threshold) do not "
                f"follow the published key rotations at version {refused.version or '?'}: "
                f"{refused.error.detail}",
            )
        found = InForce(config.release_keys, config.release_keys_version)
        self._in_force = (mark, found)
        return found

    def _trusting(self, keys: KeySet, version: int) -> TrustConfig:
        """A vehicle's trust config for these release keys (the control-plane half, which
        a rotation never touches, is the cloud's own key)."""
        return TrustConfig(
            release_keys=keys,
            release_keys_version=version,
            control_plane_keys=KeySet(keys=[self.signer.public_pem]),
        )

    def read_rotation(self, envelope: Envelope) -> KeyRotation:
        """A KeyRotation envelope, well formed and signed by its own new keys, at their
        threshold (what proves the new keys work). VERIFY_SIGNATURE_FAILED, or a
        WireError naming the rotation's bad field."""
        rotation = decode_key_rotation(envelope)
        try:
            open_envelope(envelope, KEY_ROTATION_TYPE, rotation.release_keys)
        except ReasonError as exc:
            raise ReasonError(
                exc.code, f"key rotation to version {rotation.version}, its new keys: {exc.detail}"
            ) from None
        return rotation

    def check_rotation(self, envelope: Envelope, published: Sequence[Envelope]) -> None:
        """That the rotation follows the chain `published` (oldest first): signed by the
        keys in force before it, at their threshold, and of a higher version: what a
        vehicle provisioned with the configured keys checks. VERIFY_SIGNATURE_FAILED or
        STALE_REVISION. A Conflict without release keys configured: with nothing to
        check it against, a rotation the vehicles cannot apply would be served to all
        of them for good (the chain only grows)."""
        if self.configured is None:
            raise Conflict(
                "no release keys are configured (--release-key): a key rotation cannot be "
                "checked against the keys the vehicles trust; start the control plane with "
                "--release-key (the keys the fleet was provisioned with, or any later key "
                "set of the chain) and --release-threshold (at least the vehicles' "
                "threshold), then publish it again",
                {"setting": "--release-key"},
            )
        before = self.in_force(published)
        try:
            apply_key_rotation(self._trusting(before.keys, before.version), envelope)
        except ReasonError as exc:
            raise ReasonError(
                exc.code,
                f"key rotation to version {_version(envelope)}, the release keys in force "
                f"(version {before.version}): {exc.detail}",
            ) from None

    def check_in_force(self, release_key: str, signatures_added: int, stored: Envelope) -> None:
        """That the release (as stored, with that many signatures added since it was
        registered: together they name one envelope for good) is signed by the release
        keys in force, at their threshold: what a vehicle will check before running it.
        VERIFY_SIGNATURE_FAILED naming the release, the count and the key set version;
        nothing is checked with no release keys configured. Verdicts are kept: an
        assignment does not pay for Ed25519 verifications."""
        if self.configured is None:
            return
        keys = self.in_force()
        at = (release_key, signatures_added, keys.version)
        if at not in self._verdicts:
            refusal = None
            try:
                open_envelope(stored, RELEASE_TYPE, keys.keys)
            except ReasonError as exc:
                refusal = (
                    f"{release_key}: {exc.detail} (the release keys in force, key set "
                    f"version {keys.version}); sign it with those keys and push it again "
                    "(muto releases push), or release a new version"
                )
            if len(self._verdicts) >= MAX_VERDICTS:
                self._verdicts.clear()
            self._verdicts[at] = refusal
        refusal = self._verdicts[at]
        if refusal is not None:
            raise ReasonError(ReasonCode.VERIFY_SIGNATURE_FAILED, refusal)

    def sign(self, document: DesiredStateDocument) -> Envelope:
        return sign_desired_state(document, self.signer)

    def open_release(self, envelope: Envelope) -> tuple[StackRelease, str]:
        """Decode (and, with release keys configured, verify) a signed release."""
        if self.release_keys is not None:
            return open_release(envelope, self.release_keys)
        try:
            return read_release(envelope)
        except EnvelopeError as exc:
            if exc.path is None:  # not a release's envelope: VERIFY_SIGNATURE_FAILED
                raise
            # Unsigned input to check, not a signature: 422 naming the field (`$.payload`)
            raise WireError(exc.detail, exc.path) from None

    def open_or_refusal(self, envelope: Envelope) -> tuple[StackRelease, str, ReasonError | None]:
        """As `open_release`, but a release envelope whose signatures fall short of the
        threshold is still decoded (unverified), and returned with the refusal: it may
        only add signatures to a release registered with the same payload, and is
        refused with that refusal otherwise (register_release). Anything that is not a
        release's envelope raises as `open_release` does."""
        try:
            release, digest = self.open_release(envelope)
        except ReasonError as refusal:
            if self.release_keys is None:
                raise
            try:
                release, digest = read_release(envelope)
            except (ReasonError, WireError):
                raise refusal from None
            return release, digest, refusal
        return release, digest, None

    def check_signatures(self, envelope: Envelope, signatures: Sequence[Signature]) -> None:
        """Each of `signatures`, alone, must sign `envelope`'s payload with a release key
        the control plane trusts: registration's check (DSSE over PAE, strict base64) at
        a threshold of one. VERIFY_SIGNATURE_FAILED naming the first that does not. With
        no release keys configured nothing is checked, as at registration."""
        keys = self.release_keys
        if keys is None:
            return
        trusted, alone = keys.trusted(), KeySet(keys=keys.keys, threshold=1)
        for signature in signatures:
            if signature.keyid not in trusted:
                raise ReasonError(
                    ReasonCode.VERIFY_SIGNATURE_FAILED,
                    f"signature by key {signature.keyid}: not a trusted release key",
                )
            one = Envelope(
                payload_type=envelope.payload_type,
                payload=envelope.payload,
                signatures=[signature],
            )
            try:
                open_envelope(one, RELEASE_TYPE, alone)
            except ReasonError:
                raise ReasonError(
                    ReasonCode.VERIFY_SIGNATURE_FAILED,
                    f"signature by key {signature.keyid}: not a valid signature of this release",
                ) from None


def _version(envelope: Envelope) -> str:
    try:
        return str(read_key_rotation(envelope).version)
    except ReasonError:
        return "?"
