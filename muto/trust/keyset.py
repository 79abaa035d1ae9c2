"""A set of trusted public keys and how many of them must sign (k-of-n)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import msgspec

from muto.domain.wire import Wire
from muto.trust.keys import KeyFileError, raw_keyid, raw_public_key


class KeySet(Wire, frozen=True, kw_only=True):
    """PEM public keys (Ed25519) and a threshold. Keys are counted by key id, so the
    same key listed twice is one key; the threshold can never exceed the distinct keys
    (a key set nobody can satisfy would lock the fleet out)."""

    keys: list[str]
    threshold: Annotated[int, msgspec.Meta(ge=1)] = 1

    def __post_init__(self) -> None:
        # msgspec checks Meta(ge=1) only when decoding; a KeySet built in code with
        # threshold 0 would accept unsigned documents, so check it here too.
        if self.threshold < 1:
            raise ValueError(f"threshold {self.threshold} is below 1")
        try:
            distinct = len(self.trusted())
        except KeyFileError as exc:
            raise ValueError(str(exc)) from None
        if self.threshold > distinct:
            raise ValueError(f"threshold {self.threshold} exceeds {distinct} distinct keys")

    def trusted(self) -> dict[str, bytes]:
        """Key id -> raw public key (muto.trust.keys.verify checks a signature with it)."""
        keys = (raw_public_key(pem) for pem in self.keys)
        return {raw_keyid(key): key for key in keys}


def keyset_from_files(
    paths: Sequence[Path],
    threshold: int,
    keys_flag: str,
    threshold_flag: str = "--threshold",
    kind: str = "key",
) -> KeySet:
    """The KeySet of public key files given on a command line, `threshold` of them.
    ValueError in one line naming the flag and the file (missing, unreadable, not an
    Ed25519 public key: a private key given by mistake), or the threshold flag (below 1,
    above the distinct keys given, a key given twice counting once). `kind` names the
    keys in that message (the cloud's: "release key")."""
    pems = []
    for path in paths:
        try:
            pems.append(path.read_text())
            raw_public_key(pems[-1])  # named by its file here, not later by KeySet
        except OSError as exc:
            raise ValueError(f"{keys_flag} {path}: {exc.strerror or exc}") from None
        except (UnicodeDecodeError, KeyFileError) as exc:
            raise ValueError(f"{keys_flag} {path}: {exc}") from None
    distinct = len({raw_public_key(pem) for pem in pems})
    if threshold < 1:
        raise ValueError(f"{threshold_flag} must be at least 1, not {threshold}")
    if threshold > distinct:
        raise ValueError(
            f"{threshold_flag} must be at most the {distinct} distinct {kind}(s) given "
            f"({keys_flag}), not {threshold}"
        )
    return KeySet(keys=pems, threshold=threshold)
