"""`muto release keygen | sign | verify`: the release process's side of the trust chain.

Exit codes: 0 ok, 1 verification failed (the reason code is printed), 2 bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from muto.domain.desired import Envelope
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.domain.wire import WireError, decode, encode
from muto.trust.files import atomic_write, private_dir
from muto.trust.keys import KeyFileError, Signer, write_key_pair
from muto.trust.keyset import KeySet
from muto.trust.releases import load_manifest, manifest_digest, open_release, sign_release


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

    verify = sub.add_parser("verify", help="verify a signed release offline")
    verify.add_argument("signed", type=Path, metavar="SIGNED.json")
    verify.add_argument("--pubkey", type=Path, action="append", required=True)
    verify.add_argument("--threshold", type=int, default=1, metavar="K")
    verify.set_defaults(func=run_verify)


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
        signers = [Signer.load(path) for path in args.key]
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


def run_verify(args: argparse.Namespace) -> int:
    try:
        keyset = KeySet(keys=[path.read_text() for path in args.pubkey], threshold=args.threshold)
        data = args.signed.read_bytes()
    except (OSError, ValueError) as exc:
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


def _bad_input(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2
