"""`muto release keygen | sign | verify` through `muto.cli.main`, in temporary dirs."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest

from muto.cli import main

MANIFEST = """\
stackName: perception
version: 1.2.0
artifacts:
  - type: python_wheel
    ref: https://artifacts.example/wheels/perception-1.2.0-py3-none-any.whl
    distName: perception
compatibility: {vehicleModels: [rover-x], os: [ubuntu-22.04], rosDistro: [humble]}
resourceProfile: {diskMbMin: 500}
healthModel: {readinessTimeoutSec: 60}
launch: {command: [python, -m, perception]}
security: {}
"""


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out.strip(), err.strip()


@pytest.fixture
def signed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, str]:
    """Key pair in keys/, a wheel in dist/, the manifest signed with --artifact-dir."""
    assert run(capsys, "release", "keygen", "--out", tmp_path / "keys")[0] == 0
    (tmp_path / "dist").mkdir()
    (tmp_path / "dist" / "perception-1.2.0-py3-none-any.whl").write_bytes(b"PK wheel")
    (tmp_path / "release.yaml").write_text(MANIFEST)
    code, digest, _ = run(
        capsys, "release", "sign", tmp_path / "release.yaml",
        "--key", tmp_path / "keys/release.key", "--artifact-dir", tmp_path / "dist",
    )  # fmt: skip
    assert code == 0
    return tmp_path / "release.signed.json", digest


def test_keygen_writes_a_private_key_only_its_owner_can_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "release", "keygen", "--out", tmp_path, "--name", "ci")
    assert code == 0
    assert stat.S_IMODE((tmp_path / "ci.key").stat().st_mode) == 0o600
    assert (tmp_path / "ci.key").read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert (tmp_path / "ci.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert len(out.split()[0]) == 64  # the key id
    assert run(capsys, "release", "keygen", "--out", tmp_path, "--name", "ci")[0] == 2


def test_sign_then_verify_round_trip(
    signed: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path, digest = signed
    assert digest.startswith("sha256:")
    envelope = json.loads(path.read_text())
    assert envelope["payloadType"] == "application/vnd.muto.release.v1+json"
    release = json.loads(base64.b64decode(envelope["payload"]))
    assert release["artifacts"][0]["size"] == len(b"PK wheel")  # filled from dist/
    pub = path.parent / "keys/release.pub"
    assert run(capsys, "release", "verify", path, "--pubkey", pub) == (
        0, f"perception@1.2.0 {digest}", ""
    )  # fmt: skip


def test_signing_the_same_manifest_twice_gives_the_same_digest(
    signed: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path, digest = signed
    tmp = path.parent
    again = run(
        capsys, "release", "sign", tmp / "release.yaml", "--key", tmp / "keys/release.key",
        "--artifact-dir", tmp / "dist", "--out", tmp / "again.json",
    )  # fmt: skip
    assert again == (0, digest, "")
    assert (tmp / "again.json").read_bytes() == path.read_bytes()


def tamper_payload(envelope: dict[str, object]) -> None:
    release = json.loads(base64.b64decode(str(envelope["payload"])))
    release["artifacts"][0]["ref"] = "https://evil.example/perception.whl"
    envelope["payload"] = base64.b64encode(json.dumps(release).encode()).decode()


@pytest.mark.parametrize("tamper", [tamper_payload, lambda e: e.update(signatures=[])])
def test_a_tampered_release_fails_with_its_reason_code(
    signed: tuple[Path, str], capsys: pytest.CaptureFixture[str], tamper: object
) -> None:
    path, _ = signed
    envelope = json.loads(path.read_text())
    assert callable(tamper)
    tamper(envelope)
    path.write_text(json.dumps(envelope))
    code, out, err = run(
        capsys, "release", "verify", path, "--pubkey", path.parent / "keys/release.pub"
    )
    assert (code, out) == (1, "")
    assert err.startswith("VERIFY_SIGNATURE_FAILED")


def test_a_file_that_is_not_an_envelope_fails_verification(
    signed: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = signed
    path.write_text("{}")
    code, _, err = run(
        capsys, "release", "verify", path, "--pubkey", path.parent / "keys/release.pub"
    )
    assert code == 1 and err.startswith("VERIFY_SIGNATURE_FAILED")


def test_another_key_or_a_higher_threshold_fails(
    signed: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = signed
    tmp = path.parent
    run(capsys, "release", "keygen", "--out", tmp / "keys", "--name", "other")
    other = run(capsys, "release", "verify", path, "--pubkey", tmp / "keys/other.pub")
    assert other[0] == 1 and "VERIFY_SIGNATURE_FAILED" in other[2]
    both = ["--pubkey", tmp / "keys/release.pub", "--pubkey", tmp / "keys/other.pub"]
    assert run(capsys, "release", "verify", path, *both)[0] == 0
    assert run(capsys, "release", "verify", path, *both, "--threshold", "2")[0] == 1
    assert run(capsys, "release", "verify", path, *both, "--threshold", "3")[0] == 2
    assert run(capsys, "release", "verify", path, *both, "--threshold", "0")[0] == 2


def test_two_keys_sign_a_two_of_n_release(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys"
    for name in ("a", "b"):
        run(capsys, "release", "keygen", "--out", keys, "--name", name)
    manifest = tmp_path / "release.yaml"
    manifest.write_text(
        MANIFEST.replace("distName", "digest: sha256:" + "0" * 64 + "\n    size: 1\n    distName")
    )
    assert (
        run(capsys, "release", "sign", manifest, "--key", keys / "a.key", "--key", keys / "b.key")[
            0
        ]
        == 0
    )
    pubs = ["--pubkey", keys / "a.pub", "--pubkey", keys / "b.pub"]
    assert (
        run(
            capsys, "release", "verify", tmp_path / "release.signed.json", *pubs, "--threshold", "2"
        )[0]
        == 0
    )


@pytest.mark.parametrize(
    ("edit", "path"),
    [
        pytest.param(lambda m: m.replace("1.2.0\n", "1.2.0/evil\n", 1), "$.version", id="version"),
        pytest.param(lambda m: m.replace("python_wheel", "rpm"), "$.artifacts[0].type", id="type"),
        pytest.param(lambda m: m + "extra: 1\n", "$.extra", id="unknown field"),
    ],
)
def test_a_bad_manifest_names_the_field(
    signed: tuple[Path, str], capsys: pytest.CaptureFixture[str], edit: object, path: str
) -> None:
    tmp = signed[0].parent
    assert callable(edit)
    (tmp / "bad.yaml").write_text(edit(MANIFEST))
    code, _, err = run(
        capsys, "release", "sign", tmp / "bad.yaml", "--key", tmp / "keys/release.key",
        "--artifact-dir", tmp / "dist",
    )  # fmt: skip
    assert code == 2
    assert f"at {path}:" in err


def test_a_declared_digest_must_match_the_artifact_dir(
    signed: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    tmp = signed[0].parent
    (tmp / "bad.yaml").write_text(MANIFEST.replace("distName", "size: 3\n    distName"))
    code, _, err = run(
        capsys, "release", "sign", tmp / "bad.yaml", "--key", tmp / "keys/release.key",
        "--artifact-dir", tmp / "dist",
    )  # fmt: skip
    assert code == 2 and "at $.artifacts[0].size:" in err
