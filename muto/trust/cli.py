"""`muto release keygen | sign | verify | rotate-keys | from-muto-stack`: the release
process's side of the trust chain, and the import of Eclipse Muto stacks.

Exit codes: 0 ok, 1 verification failed (the reason code is printed), 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import yaml

from muto.domain.desired import Envelope
from muto.domain.errors import ReasonError
from muto.domain.muto_stack import UnsupportedStack, release_from_muto_stack
from muto.domain.reasons import ReasonCode
from muto.domain.release import Artifact
from muto.domain.wire import WireError, convert, decode, encode, to_builtins
from muto.trust.artifacts import measure_file
from muto.trust.dsse import KEY_ROTATION_TYPE, open_envelope
from muto.trust.files import atomic_write, private_dir
from muto.trust.keys import KeyFileError, Signer, write_key_pair
from muto.trust.keyset import keyset_from_files
from muto.trust.releases import load_manifest, manifest_digest, open_release, sign_release
from muto.trust.rotation import KeyRotation, sign_key_rotation


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = subparsers.add_parser("release", help="release keys, signing, offline verification")
    sub = group.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")

    keygen = sub.add_parser("keygen", help="make an Ed25519 key pair (NAME.key 0600, NAME.pub)")
    keygen.add_argument("--out", type=Path, required=True, metavar="DIR")
    keygen.add_argument("--name", default="release", help="file stem (default: release)")
    keygen.set_defaults(func=run_keygen)

    sign = sub.add_parser("sign", help="sign a release manifest into a DSSE envelope")
    sign.add_argument("manifest", type=Path, metavar="MANIFEST.yaml")
    sign.add_argument("--key", type=Path, action="append", required=True, help="repeatable")
    sign.add_argument("--out", type=Path, help="default: MANIFEST.signed.json")
    sign.add_argument("--artifact-dir", type=Path, metavar="DIR")
    sign.add_argument(
        "--hosted",
        action="store_true",
        help="the control plane serves the artifacts found in --artifact-dir: their refs "
        "become artifacts/sha256:<hex> (upload them with `muto releases push`)",
    )
    sign.set_defaults(func=run_sign)

    imported = sub.add_parser(
        "from-muto-stack", help="an Eclipse Muto stack (JSON) as a ros_nodes release manifest"
    )
    imported.add_argument("stack", type=Path, metavar="STACK.json")
    imported.add_argument("--version", required=True, help="the release version")
    imported.add_argument("--stack-name", help="default: the stack's metadata.name or name")
    imported.add_argument(
        "--archive", required=True, help="the overlay archive (path or URL) holding lib/<pkg>/"
    )
    imported.add_argument("--prefix", default="", help="where lib/ is inside the archive")
    imported.add_argument("--out", type=Path, help="default: print the manifest")
    imported.set_defaults(func=run_from_muto_stack)

    verify = sub.add_parser("verify", help="verify a signed release offline")
    verify.add_argument("signed", type=Path, metavar="SIGNED.json")
    verify.add_argument("--pubkey", type=Path, action="append", required=True)
    verify.add_argument("--threshold", type=int, default=1, metavar="K")
    verify.set_defaults(func=run_verify)

    rotate = sub.add_parser(
        "rotate-keys",
        help="sign a KeyRotation: the vehicles' next release key set (docs/trust.md)",
    )
    rotate.add_argument(
        "--version", type=int, required=True, metavar="N",
        help="the new key set's version: above the one the vehicles trust (provisioned: 1)",
    )  # fmt: skip
    rotate.add_argument("--new-key", type=Path, action="append", required=True, metavar="PUB")
    rotate.add_argument("--new-threshold", type=int, default=1, metavar="K")
    rotate.add_argument(
        "--key", type=Path, action="append", required=True, metavar="PRIVATE",
        help="repeatable: the current threshold of current keys and the new threshold of "
        "new keys sign (one key may be both)",
    )  # fmt: skip
    rotate.add_argument(
        "--current-key", type=Path, action="append", metavar="PUB",
        help="required, repeatable: the key set the vehicles trust now (the last published "
        "rotation's, or as provisioned); the rotation is checked against it",
    )  # fmt: skip
    rotate.add_argument(
        "--current-threshold", type=int, default=1, metavar="K",
        help="the vehicles' threshold of --current-key (default 1)",
    )  # fmt: skip
    rotate.add_argument("--out", type=Path, required=True, metavar="ROTATION.signed.json")
    rotate.set_defaults(func=run_rotate_keys)


def run_keygen(args: argparse.Namespace) -> int:
    out: Path = args.out
    private_dir(out)
    signer = Signer.generate()
    private, public = out / f"{args.name}.key", out / f"{args.name}.pub"
    try:
        write_key_pair(signer, private, public)
    except FileExistsError:
        return _bad_input(f"{private} exists; not overwriting a key")
    print(f"{signer.keyid}  {private}  {public}")
    return 0


def run_sign(args: argparse.Namespace) -> int:
    manifest: Path = args.manifest
    try:
        signers = _signers(args.key)
    except ValueError as exc:
        return _bad_input(str(exc))
    try:
        if args.hosted and args.artifact_dir is None:
            return _bad_input("--hosted needs --artifact-dir (the files to host)")
        release = load_manifest(manifest, args.artifact_dir, hosted=args.hosted)
    except (OSError, KeyFileError) as exc:
        return _bad_input(str(exc))
    except WireError as exc:
        return _bad_input(f"{manifest}: invalid manifest at {exc.path or '$'}: {exc.message}")
    out: Path = args.out or manifest.with_name(f"{manifest.stem}.signed.json")
    atomic_write(out, encode(sign_release(release, signers)) + b"\n")
    print(manifest_digest(release))
    return 0


def run_from_muto_stack(args: argparse.Namespace) -> int:
    """Exit 2 naming what the stack uses that a release cannot express."""
    try:
        stack = json.loads(args.stack.read_text())
    except (OSError, ValueError) as exc:
        return _bad_input(f"{args.stack}: {exc}")
    named = (
        (stack.get("metadata") or {}).get("name") or stack.get("name")
        if isinstance(stack, dict)
        else None
    )
    name = args.stack_name or re.sub(r"[^A-Za-z0-9._:-]+", "-", str(named or "")).strip("-")
    if not name:
        return _bad_input(f"{args.stack}: no metadata.name; pass --stack-name")
    local = Path(args.archive)
    digest, size = measure_file(local) if local.is_file() else ("sha256:" + "0" * 64, 0)
    archive = {"type": "archive", "ref": args.archive, "digest": digest, "size": size}
    try:
        release = release_from_muto_stack(
            stack,
            stack_name=name,
            version=args.version,
            archive=convert(archive, Artifact),
            prefix=args.prefix,
        )
    except (UnsupportedStack, WireError) as exc:
        return _bad_input(f"{args.stack}: {exc}")
    manifest = to_builtins(release)
    if not local.is_file():  # measured when signing: `muto release sign --artifact-dir`
        for artifact in manifest["artifacts"]:
            del artifact["digest"], artifact["size"]
    text = yaml.safe_dump(manifest, sort_keys=False)
    if args.out:
        atomic_write(args.out, text.encode())
    else:
        sys.stdout.write(text)
    return 0


def run_verify(args: argparse.Namespace) -> int:
    try:
        keyset = keyset_from_files(args.pubkey, args.threshold, "--pubkey")
        data = args.signed.read_bytes()
    except OSError as exc:
        return _bad_input(f"{args.signed}: {exc.strerror or exc}")
    except ValueError as exc:
        return _bad_input(str(exc))
    try:
        try:
            envelope = decode(data, Envelope)
        except WireError as exc:
            raise ReasonError(ReasonCode.VERIFY_SIGNATURE_FAILED, str(exc)) from None
        release, digest = open_release(envelope, keyset)
    except ReasonError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"{release.key} {digest}")
    return 0


def run_rotate_keys(args: argparse.Namespace) -> int:
    """Sign the rotation with every `--key`, and write it only once it opens under the
    new keys and under `--current-key`, each at its threshold: what a vehicle checks
    (`apply_key_rotation`). A rotation the vehicles cannot apply would still be served to
    every one of them, for good (the chain only grows), so the current keys are required."""
    if args.version < 2:
        return _bad_input(
            f"--version must be at least 2 (the provisioned key set is 1), not {args.version}"
        )
    if not args.current_key:
        return _bad_input(
            "--current-key is required: the public keys the vehicles trust now (with "
            "--current-threshold), which must have signed the rotation for them to apply it"
        )
    try:
        new = keyset_from_files(args.new_key, args.new_threshold, "--new-key", "--new-threshold")
        current = keyset_from_files(
            args.current_key, args.current_threshold, "--current-key", "--current-threshold"
        )
        signers = _signers(args.key)
    except ValueError as exc:
        return _bad_input(str(exc))
    envelope = sign_key_rotation(KeyRotation(version=args.version, release_keys=new), signers)
    for keys, named in ((new, "new keys (--new-key)"), (current, "current keys (--current-key)")):
        try:
            open_envelope(envelope, KEY_ROTATION_TYPE, keys)
        except ReasonError as exc:
            return _bad_input(
                f"--key: not signed by {keys.threshold} of the {named}: {exc.detail}; "
                "nothing written"
            )
    try:
        atomic_write(args.out, encode(envelope) + b"\n")
    except OSError as exc:
        return _bad_input(f"--out {args.out}: {exc.strerror or exc}")
    print(f"version {args.version}: {new.threshold} of {', '.join(sorted(new.trusted()))}")
    return 0


def _signers(paths: list[Path]) -> list[Signer]:
    """The private keys given with `--key`; ValueError naming the flag and the file."""
    signers = []
    for path in paths:
        try:
            signers.append(Signer.load(path))
        except OSError as exc:
            raise ValueError(f"--key {path}: {exc.strerror or exc}") from None
        except KeyFileError as exc:  # its message starts with the file
            raise ValueError(f"--key {exc}") from None
    return signers


def _bad_input(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2
