"""Signed releases: manifest YAML in, DSSE envelope over the canonical bytes out.

The manifest digest is the sha256 of the canonical bytes, which are also the signed
payload: signing one manifest twice gives one digest, and a vehicle recomputes it from
exactly the bytes that were signed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from muto.domain.desired import Envelope
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.domain.release import StackRelease
from muto.domain.wire import WireError, canonical, convert, decode
from muto.trust.artifacts import measure_file
from muto.trust.dsse import RELEASE_TYPE, digest, open_envelope, read_envelope, sign_envelope
from muto.trust.keys import Signer
from muto.trust.keyset import KeySet


def manifest_digest(release: StackRelease) -> str:
    return digest(canonical(release))


def sign_release(release: StackRelease, signers: Sequence[Signer]) -> Envelope:
    return sign_envelope(canonical(release), RELEASE_TYPE, signers)


def open_release(envelope: Envelope, keyset: KeySet) -> tuple[StackRelease, str]:
    """The verified release and its manifest digest, or VERIFY_SIGNATURE_FAILED."""
    payload = open_envelope(envelope, RELEASE_TYPE, keyset)
    try:
        release = decode(payload, StackRelease)
    except WireError as exc:
        raise ReasonError(ReasonCode.VERIFY_SIGNATURE_FAILED, f"release: {exc}") from None
    return release, digest(payload)


def read_release(envelope: Envelope) -> tuple[StackRelease, str]:
    """The release and its manifest digest, its signatures NOT checked (a control plane
    with no release keys configured; vehicles always `open_release`). EnvelopeError for
    an envelope that is not a release's, WireError naming the release's bad field."""
    payload = read_envelope(envelope, RELEASE_TYPE)
    return decode(payload, StackRelease), digest(payload)


def load_manifest(
    path: Path, artifact_dir: Path | None = None, *, hosted: bool = False
) -> StackRelease:
    """Decode a camelCase manifest; WireError names the offending field path. `hosted`:
    each artifact measured in `artifact_dir` gets the ref `artifacts/<digest>`, which a
    vehicle resolves against its control plane's URL (that serves it by digest)."""
    import yaml  # here: a vehicle verifies releases but never reads a manifest file

    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise WireError(f"malformed YAML: {exc}") from None
    if artifact_dir is not None and isinstance(raw, dict):
        _measure_artifacts(raw.get("artifacts"), artifact_dir, hosted)
    return convert(raw, StackRelease)


def artifact_file_name(ref: str) -> str:
    """The basename of an artifact ref: a URL, a path, or a plain file name."""
    return urlsplit(ref).path.rstrip("/").rsplit("/", 1)[-1]


def _measure_artifacts(artifacts: Any, artifact_dir: Path, hosted: bool = False) -> None:
    """Fill each artifact's digest and size from its local file, or check the declared
    ones against it. An artifact with no local file (an OCI image, say) keeps what the
    manifest declares, and must declare both."""
    if not isinstance(artifacts, list):
        return  # convert() reports the field path
    for i, artifact in enumerate(artifacts):
        if not isinstance(artifact, dict) or not isinstance(artifact.get("ref"), str):
            continue
        local = artifact_dir / artifact_file_name(artifact["ref"])
        if not local.is_file():
            if "digest" not in artifact or "size" not in artifact:
                raise WireError(f"no file {local} to measure", f"$.artifacts[{i}]")
            continue
        actual = dict(zip(("digest", "size"), measure_file(local), strict=True))
        for field, value in actual.items():
            declared = artifact.setdefault(field, value)
            if declared != value:
                raise WireError(
                    f"{field} {declared!r} declared, {local} has {value!r}",
                    f"$.artifacts[{i}].{field}",
                )
        if hosted:
            artifact["ref"] = f"artifacts/{artifact['digest']}"
