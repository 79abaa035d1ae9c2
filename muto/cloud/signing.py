"""The control plane's rules for signed documents: the key it signs desired states
with, and how it opens a release an operator registers."""

from __future__ import annotations

from collections.abc import Sequence

from muto.cloud.settings import Settings, named
from muto.domain.desired import DesiredStateDocument, Envelope, Signature
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.domain.release import StackRelease
from muto.domain.wire import WireError
from muto.trust.desired_state import sign_desired_state
from muto.trust.dsse import RELEASE_TYPE, EnvelopeError, open_envelope
from muto.trust.keys import KeyFileError, Signer, load_or_create_key_pair, raw_public_key
from muto.trust.keyset import KeySet
from muto.trust.releases import open_release, read_release

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
    pems = []
    for path in settings.release_keys:
        try:
            pems.append(path.read_text())
            raw_public_key(pems[-1])  # named by its file here, not later by KeySet
        except (OSError, UnicodeDecodeError, KeyFileError) as exc:
            raise ValueError(f"--release-key {path}: {exc}") from None
    distinct = len({raw_public_key(pem) for pem in pems})
    if k > distinct:
        raise ValueError(
            f"{option} must be at most the {distinct} distinct release key(s) given "
            f"(--release-key), not {k}"
        )
    return KeySet(keys=pems, threshold=k)


class Signing:
    """Signs desired states with the control plane's key; opens registered releases
    (verified against `release_keys` when the operator configured any)."""

    def __init__(self, signer: Signer, release_keys: KeySet | None) -> None:
        self.signer = signer
        self.release_keys = release_keys

    @classmethod
    def from_settings(cls, settings: Settings) -> Signing:
        return cls(control_plane_signer(settings), release_keyset(settings))

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
