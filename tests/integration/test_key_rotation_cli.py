"""`muto keys publish-rotation | rotations` against a real server: the operator's verbs
for a signed release key rotation (docs/cli.md), their output and exit codes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from muto.domain.wire import encode
from muto.trust.keys import Signer
from muto.trust.keyset import KeySet
from muto.trust.rotation import KeyRotation, sign_key_rotation
from tests.support.api_server import MUTO, ApiServer


def test_publish_a_rotation_then_list_it(tmp_path: Path) -> None:
    a, b = Signer.generate(), Signer.generate()
    keys = KeySet(keys=[b.public_pem])
    signed = tmp_path / "rotation.signed.json"
    signed.write_bytes(encode(sign_key_rotation(KeyRotation(version=2, release_keys=keys), [a, b])))
    not_one = tmp_path / "release.json"
    not_one.write_text('{"payloadType": "application/json", "payload": "", "signatures": []}')
    trusted = tmp_path / "a.pub"  # the cloud checks a rotation against the keys in force
    trusted.write_text(a.public_pem)
    server = ApiServer(tmp_path / "cloud", options=("--release-key", str(trusted)))
    token = tmp_path / "operator.token"
    token.write_text(server.issue("operator")["operator"][0])
    server.start()
    try:

        def muto(*argv: str) -> subprocess.CompletedProcess[str]:
            flags = ["--url", server.url, "--token-file", str(token)]
            return subprocess.run([*MUTO, "keys", *argv, *flags], capture_output=True, text=True)

        published = muto("publish-rotation", str(signed), "-o", "json")
        assert published.returncode == 0, published.stderr
        assert json.loads(published.stdout)["version"] == 2
        assert "published release key set version 2" in published.stderr
        again = muto("publish-rotation", str(signed))
        assert again.returncode == 0 and "already" in again.stderr
        refused = muto("publish-rotation", str(not_one))
        assert refused.returncode == 2, refused.stderr  # not a rotation: nothing sent
        listed = muto("rotations", "-o", "json")
        assert [r["version"] for r in json.loads(listed.stdout)] == [2]
        table = muto("rotations")
        assert table.returncode == 0 and "1 of 1" in table.stdout
    finally:
        assert server.stop() == 0, server.tail()
    assert server.tracebacks() == []
