"""`muto releases push | list | get`: signed releases, and the artifacts the control
plane hosts for them. Pushing a release already registered with the same digest adds the
signatures of keys not yet on it (a second signer's), and says which."""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rich.table import Table

from muto.cloud.settings import Settings
from muto.domain.desired import Envelope
from muto.domain.errors import ReasonError
from muto.domain.wire import WireError, decode
from muto.fleetctl.connection import (
    NOT_FOUND,
    REFUSED,
    USAGE,
    Api,
    Connection,
    FleetError,
    api_path,
    check_id,
)
from muto.fleetctl.output import common, emit, fields, grid, verb
from muto.trust.releases import read_release

HOSTED = "artifacts/"  # a ref the control plane serves: artifacts/sha256:<hex>
# The largest request body the control plane reads (413 too_large beyond it).
MAX_BODY_BYTES = Settings.max_body_bytes


def hosted_artifacts(envelope: dict[str, Any]) -> list[dict[str, Any]]:
    """The artifacts of a signed release that the control plane is to serve: those
    whose ref is relative `artifacts/<digest>` (what `muto release sign --hosted` writes)."""
    try:
        manifest = json.loads(base64.b64decode(envelope["payload"], validate=True))
        artifacts = manifest.get("artifacts", [])
    except (KeyError, TypeError, ValueError, AttributeError):
        raise FleetError(
            "not a signed release (a DSSE envelope from `muto release sign`)", USAGE
        ) from None
    return [
        a
        for a in artifacts
        if isinstance(a, dict)
        and not urlsplit(str(a.get("ref", ""))).scheme
        and str(a.get("ref", "")).startswith(HOSTED)
    ]


def local_file(artifact: dict[str, Any], directory: Path) -> Path:
    """The file in `directory` with the artifact's digest."""
    try:
        files = sorted(p for p in directory.iterdir() if p.is_file())
    except OSError as exc:
        raise FleetError(
            f"cannot read --artifact-dir {directory}: {exc.strerror or exc}", USAGE
        ) from None
    for candidate in files:
        if (
            candidate.stat().st_size == artifact.get("size")
            and _sha256(candidate) == artifact["digest"]
        ):
            return candidate
    raise FleetError(
        f"no file in {directory} has digest {artifact['digest']} (pass --artifact-dir)", USAGE
    )


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()


def upload(api: Api, artifact: dict[str, Any], path: Path) -> bool:
    """PUT unless the control plane has it; True if it was sent."""
    digest = artifact["digest"]
    if api.exists(api_path("artifacts", digest)):
        return False
    with path.open("rb") as f:
        api.call(
            "PUT",
            api_path("artifacts", digest),
            content=iter(lambda: f.read(1 << 20), b""),  # streamed, never whole in memory
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Length": str(path.stat().st_size),
            },
        )
    return True


def push(args: argparse.Namespace) -> int:
    signed = Path(args.signed)
    try:
        envelope = json.loads(signed.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is one
        raise FleetError(f"cannot read {signed}: {exc}", USAGE) from None
    body, key, digest = registration(signed, envelope)
    hosted = hosted_artifacts(envelope)
    directory = Path(args.artifact_dir) if args.artifact_dir else signed.parent
    files: dict[str, Path] = {}
    absent: list[tuple[dict[str, Any], FleetError]] = []
    for artifact in hosted:
        try:
            files[artifact["digest"]] = local_file(artifact, directory)
        except FleetError as no_file:
            absent.append((artifact, no_file))
    with Connection.resolve(args).client(timeout=args.timeout) as api:
        refuse_another_digest(api, key, digest)  # before any upload: none left orphaned
        # A file not here is needed only if the control plane lacks it (a second signer
        # pushing a release already registered, with its artifacts, by the first).
        for artifact, refusal in absent:
            if not api.exists(api_path("artifacts", artifact["digest"])):
                raise refusal
        for artifact in hosted:
            digest, path = artifact["digest"], files.get(artifact["digest"])
            sent = path is not None and upload(api, artifact, path)
            name = f"{path.name} " if path is not None else ""
            print(f"{'uploaded' if sent else 'already stored'} {name}{digest}", file=sys.stderr)
        registered = api.call(
            "POST", "/releases", content=body, headers={"Content-Type": "application/json"}
        )
    print(outcome(registered["data"], registered.get("metadata") or {}), file=sys.stderr)
    emit(args, registered["data"], _detail)
    return 0


def registration(signed: Path, envelope: Any) -> tuple[bytes, tuple[str, str], str]:
    """The body of `POST /releases`, the release's (stack, version) and its manifest
    digest; FleetError(USAGE) for what the API would refuse whatever it holds (not a
    release's envelope, a body over its limit), found before anything is uploaded."""
    body = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode()
    if len(body) > MAX_BODY_BYTES:
        raise FleetError(
            f"{signed}: {len(body)} bytes, over the {MAX_BODY_BYTES} the control plane "
            "accepts in a request (413 too_large)",
            USAGE,
        )
    try:
        release, digest = read_release(decode(body, Envelope))
    except (WireError, ReasonError) as exc:  # EnvelopeError is a ReasonError
        at = getattr(exc, "path", None)
        raise FleetError(
            f"{signed} is not a signed release{f' at {at}' if at else ''}: {exc}", USAGE
        ) from None
    return body, (release.stack_name, release.version), digest


def refuse_another_digest(api: Api, key: tuple[str, str], digest: str) -> None:
    """A conflict, as the API would answer it after the uploads, if stack@version is
    registered with another manifest digest (releases are immutable)."""
    try:
        found = api.call("GET", api_path("releases", *key))["data"]
    except FleetError as refusal:
        if refusal.exit_code == NOT_FOUND:
            return
        raise
    if found["manifestDigest"] != digest:
        raise FleetError(
            f"release {key[0]}@{key[1]} is already registered with digest "
            f"{found['manifestDigest']}, this one is {digest}; releases are immutable "
            "(nothing was uploaded)",
            REFUSED,
            "conflict",
        )


def outcome(release: dict[str, Any], metadata: dict[str, Any]) -> str:
    """What the push did, in a line: registered the release, added signatures to the
    one registered with its digest (its content unchanged), or nothing."""
    key = f"{release['stackName']}@{release['version']}"
    added = metadata.get("added") or []
    if metadata.get("created"):
        return f"registered {key} {release['manifestDigest']}"
    if added:
        return "\n".join(f"added the signature of key {k} to {key}" for k in added)
    return f"{key} is registered with these signatures already: nothing changed"


def listing(args: argparse.Namespace) -> int:
    params = {"stack": args.stack} if args.stack else None
    with Connection.resolve(args).client() as api:
        found = api.call("GET", "/releases", params=params)["data"]
    emit(args, found, _table)
    return 0


def _table(releases: list[dict[str, Any]]) -> Table:
    return grid(
        None,
        ["STACK", "VERSION", "DIGEST", "ARTIFACTS", "REGISTERED"],
        (
            [
                r["stackName"],
                r["version"],
                r["manifestDigest"][:19] + "…",
                len(r.get("manifest", {}).get("artifacts", [])),
                r.get("registeredAt"),
            ]
            for r in releases
        ),
    )


def split_release(text: str) -> tuple[str, str]:
    """STACK@VERSION, each an id the API's rule allows (FleetError(USAGE) otherwise)."""
    stack, sep, version = text.partition("@")
    if not sep or not stack or not version:
        raise FleetError(f"{text!r}: expected STACK@VERSION, e.g. core@1.0.0", USAGE)
    return check_id("stack", stack), check_id("version", version)


def one(args: argparse.Namespace) -> int:
    path = api_path("releases", *split_release(args.release))
    with Connection.resolve(args).client() as api:
        found = api.call("GET", path)["data"]
    emit(args, found, _detail)
    return 0


def _detail(r: dict[str, Any]) -> Table:
    manifest = r.get("manifest", {})
    return fields(
        f"release {r['stackName']}@{r['version']}",
        [
            ("manifestDigest", r["manifestDigest"]),
            ("registeredAt", r.get("registeredAt")),
            ("signedBy", [s.get("keyid") for s in r.get("envelope", {}).get("signatures", [])]),
            (
                "artifacts",
                [f"{a.get('ref')} ({a.get('size')} B)" for a in manifest.get("artifacts", [])],
            ),
            ("launch", manifest.get("launch")),
        ],
    )


def register(sub: Any) -> None:
    group = sub.add_parser(
        "releases", help="signed releases and hosted artifacts (over the HTTP API)"
    )
    actions = group.add_subparsers(dest="action", required=True, metavar="VERB")

    p = verb(
        actions,
        "push",
        "upload the artifacts a signed release hosts on the control plane, then register it",
        "muto releases push release.signed.json --artifact-dir dist",
        push,
    )
    common(p)
    p.add_argument("signed", metavar="SIGNED.json", help="from `muto release sign`")
    p.add_argument(
        "--artifact-dir",
        metavar="DIR",
        help="where the files of `artifacts/sha256:...` refs are (default: beside SIGNED)",
    )
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per request (uploads)")

    p = verb(actions, "list", "registered releases", "muto releases list --stack core", listing)
    common(p)
    p.add_argument("--stack", help="only this stack")

    p = verb(
        actions,
        "get",
        "one release: digest, artifacts, launch",
        "muto releases get core@1.0.0",
        one,
    )
    common(p)
    p.add_argument("release", metavar="STACK@VERSION")
