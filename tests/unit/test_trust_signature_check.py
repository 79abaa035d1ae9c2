"""Every signature muto checks is checked by muto.trust.keys.verify (libsodium): what
cryptography signs verifies there, nothing else does, and a process that only verifies
(a vehicle's agent) never imports cryptography (docs/dependencies.md)."""

from __future__ import annotations

import subprocess
import sys

from muto.domain.wire import encode
from muto.trust import KeySet
from muto.trust.dsse import open_envelope, sign_envelope
from muto.trust.keys import Signer, raw_public_key, verify

MESSAGE = b"desired state, sequence 7"


def test_what_cryptography_signs_verifies_and_nothing_else_does() -> None:
    signer, other = Signer.generate(), Signer.generate()
    key = raw_public_key(signer.public_pem)
    sig = signer.private_key.sign(MESSAGE)
    assert verify(key, sig, MESSAGE)
    assert not verify(key, sig, MESSAGE + b"!")  # another message
    assert not verify(key, bytes([sig[0] ^ 1]) + sig[1:], MESSAGE)  # a flipped bit
    assert not verify(raw_public_key(other.public_pem), sig, MESSAGE)  # another key
    assert not verify(key, sig[:-1], MESSAGE)  # a signature of the wrong length
    assert not verify(key[:-1], sig, MESSAGE)  # a key of the wrong length
    assert not verify(bytes(32), sig, MESSAGE)  # a small-order key is refused


CHECK_ONLY = """
import sys
from muto.domain.desired import Envelope
from muto.domain.wire import decode
from muto.trust import KeySet
from muto.trust.dsse import open_envelope
envelope = decode(sys.stdin.buffer.read(), Envelope)
keys = KeySet(keys=[sys.argv[1]])
assert open_envelope(envelope, "application/x-test", keys) == b"payload"
print("cryptography" in sys.modules)
"""


def test_a_process_that_only_verifies_never_imports_cryptography() -> None:
    signer = Signer.generate()
    envelope = sign_envelope(b"payload", "application/x-test", [signer])
    assert open_envelope(envelope, "application/x-test", KeySet(keys=[signer.public_pem]))
    checked = subprocess.run(
        [sys.executable, "-c", CHECK_ONLY, signer.public_pem],
        input=encode(envelope),
        capture_output=True,
        check=True,
    )
    assert checked.stdout.strip() == b"False", checked.stderr.decode()
