"""`muto release sign --hosted`: artifacts measured in --artifact-dir are named by their
digest, relative to the control plane that hosts them; the rest keep their refs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from muto.cli import main
from muto.trust.releases import load_manifest

MANIFEST = """stackName: core
version: 1.0.0
artifacts:
  - {type: archive, ref: core.tar.gz}
  - {type: archive, ref: https://elsewhere.example/ext.tar.gz, digest: "sha256:%s", size: 3}
launch: {command: [./run.sh]}
""" % ("b" * 64)


def test_hosted_refs_are_digests_and_external_ones_stay(tmp_path: Path) -> None:
    (tmp_path / "dist").mkdir()
    (tmp_path / "dist" / "core.tar.gz").write_bytes(b"core bytes")
    (tmp_path / "release.yaml").write_text(MANIFEST)
    release = load_manifest(tmp_path / "release.yaml", tmp_path / "dist", hosted=True)
    digest = f"sha256:{hashlib.sha256(b'core bytes').hexdigest()}"
    assert [a.ref for a in release.artifacts] == [
        f"artifacts/{digest}",
        "https://elsewhere.example/ext.tar.gz",
    ]
    plain = load_manifest(tmp_path / "release.yaml", tmp_path / "dist")
    assert plain.artifacts[0].ref == "core.tar.gz"


def test_hosted_needs_the_files_to_host(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "release.yaml").write_text(MANIFEST)
    assert main(["release", "keygen", "--out", str(tmp_path / "keys")]) == 0
    code = main(
        ["release", "sign", str(tmp_path / "release.yaml"), "--key",
         str(tmp_path / "keys" / "release.key"), "--hosted"]
    )  # fmt: skip
    assert code == 2
    assert "--hosted needs --artifact-dir" in capsys.readouterr().err
