"""Signed releases: manifest YAML in, DSSE envelope over the canonical bytes out.

The manifest digest is the sha256 of the canonical bytes, which are also the signed
payload: signing one manifest twice gives one digest, and a vehicle recomputes it from
exactly the bytes that were signed.
"""

from __future__ import annotations

import functools
import re
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
from muto.trust.dsse import (
    MAX_PAYLOAD_CHARS,
    RELEASE_TYPE,
    digest,
    open_envelope,
    read_envelope,
    sign_envelope,
)
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
    raw = read_yaml_file(path, MAX_MANIFEST_BYTES, "a release manifest")
    if artifact_dir is not None and isinstance(raw, dict):
        _measure_artifacts(raw.get("artifacts"), artifact_dir, hosted)
    try:
        release = convert(raw, StackRelease)
    except WireError as exc:
        raise without_content(exc) from None
    signed = 4 * -(-len(canonical(release)) // 3)  # its base64, as the envelope carries it
    if signed > MAX_PAYLOAD_CHARS:
        raise WireError(
            f"its signed payload would be {signed} characters, over the {MAX_PAYLOAD_CHARS} "
            "every reader of a signed release accepts"
        )
    return release


# A manifest is read whole, and no larger than the largest signed payload: a file over
# that is no manifest (a 129 MB one took 47 s and 734 MB before it was refused).
MAX_MANIFEST_BYTES = MAX_PAYLOAD_CHARS
# What a manifest's field is named like: an unknown key that is not (a line of another
# file named by mistake, /etc/shadow through a symlink) is not echoed in the error.
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
_UNKNOWN = re.compile(r"\AObject contains unknown field `(.*)`", re.S)


def read_yaml_file(path: Path, limit: int, what: str) -> Any:
    """The YAML (or JSON) document at `path` an operator names (a release manifest, an
    agentConfig): at most `limit` bytes, UTF-8 (or a BOM's encoding), no key twice in a
    mapping. WireError otherwise, naming a line and column, never the file's text
    (PyYAML's own message quotes the offending line; the file may be one named by
    mistake, /etc/shadow through a symlink). OSError when it cannot be read."""
    import yaml  # here: a vehicle verifies releases but never reads a manifest file

    with path.open("rb") as f:  # a pipe too (`<(...)`): bounded by reading, not by stat
        data = f.read(limit + 1)
    if len(data) > limit:
        raise WireError(f"larger than {limit} bytes: not {what}")
    try:
        return yaml.load(data, Loader=_unique_keys_loader())
    except _DuplicateKey as exc:
        raise WireError(str(exc)) from None
    except yaml.reader.ReaderError as exc:
        raise WireError(f"not UTF-8 text (byte {exc.position}: {exc.reason})") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise WireError(f"malformed YAML: {exc.problem}{where}") from None
    except yaml.YAMLError as exc:
        raise WireError(f"malformed YAML: {exc.__class__.__name__}") from None


class _DuplicateKey(ValueError):
    pass


@functools.cache
def _unique_keys_loader() -> type[Any]:
    """yaml.SafeLoader, refusing a key given twice in one mapping: PyYAML keeps the last
    silently, and `stackName: s` then `stackName: t` was signed as `t`. A merge (`<<`)
    may still override, as YAML means it to."""
    import yaml

    class UniqueKeys(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    first = seen.get(key)
                except TypeError:
                    continue  # unhashable: SafeLoader says so below
                if first is not None:
                    named = key if isinstance(key, str) and _FIELD_NAME.match(key) else "a key"
                    raise _DuplicateKey(
                        f"duplicate key {named} at line {line} (first at line {first})"
                    )
                seen[key] = line
            found: dict[Any, Any] = super().construct_mapping(node, deep)
            return found

    return UniqueKeys


def without_content(exc: WireError) -> WireError:
    """`exc`, an unknown field named only if it is named like a field."""
    unknown = _UNKNOWN.match(exc.message)
    if unknown is None or _FIELD_NAME.match(unknown.group(1)):
        return exc
    parent = (exc.path or "$").removesuffix(f".{unknown.group(1)}")
    return WireError("Object contains an unknown key, not named like a field", parent)


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
