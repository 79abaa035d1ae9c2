"""`muto release rotate-keys` (sign a KeyRotation offline) and `muto agent trust` (the
TrustConfig a vehicle is provisioned with): a rotation that is written is one a vehicle
applies; bad input is one line naming the flag and the file, exit 2, never a traceback."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from muto.cli import main
from muto.domain.desired import Envelope
from muto.domain.wire import decode
from muto.trust import KeySet, TrustConfig, apply_key_rotation

DOC = Path(__file__).parents[2] / "docs" / "trust.md"


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out.strip(), err.strip()


@pytest.fixture
def keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """Key pairs old, new, other and cp (the control plane's) in tmp_path."""
    for name in ("old", "new", "other", "cp"):
        assert run(capsys, "release", "keygen", "--out", tmp_path, "--name", name)[0] == 0
    return tmp_path


def trusted(keys: Path, *names: str, k: int = 1) -> TrustConfig:
    pems = [(keys / f"{n}.pub").read_text() for n in names]
    return TrustConfig(
        release_keys=KeySet(keys=pems, threshold=k),
        control_plane_keys=KeySet(keys=[(keys / "cp.pub").read_text()]),
    )


def test_a_rotation_signed_by_the_current_and_new_keys_is_one_a_vehicle_applies(
    keys: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = keys / "rotation.signed.json"
    code, said, err = run(
        capsys, "release", "rotate-keys", "--version", 2,
        "--new-key", keys / "new.pub", "--new-key", keys / "other.pub", "--new-threshold", 2,
        "--key", keys / "old.key", "--key", keys / "new.key", "--key", keys / "other.key",
        "--current-key", keys / "old.pub", "--out", out,
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert said.startswith("version 2: 2 of ")
    rotated = apply_key_rotation(trusted(keys, "old"), decode(out.read_bytes(), Envelope))
    assert rotated.release_keys_version == 2
    assert rotated.release_keys == trusted(keys, "new", "other", k=2).release_keys


def test_a_rotation_the_vehicles_could_not_apply_is_not_written(
    keys: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = keys / "rotation.signed.json"
    base = ("release", "rotate-keys", "--version", 2, "--out", out)
    # The new key did not sign: the new set's threshold is not met.
    code, _, err = run(
        capsys, *base, "--new-key", keys / "new.pub", "--key", keys / "old.key",
        "--current-key", keys / "old.pub",
    )  # fmt: skip
    assert code == 2 and "not signed by 1 of the new keys (--new-key)" in err
    # The current key did not sign: the vehicles' own threshold is not met.
    code, _, err = run(
        capsys, *base, "--new-key", keys / "new.pub", "--key", keys / "new.key",
        "--current-key", keys / "old.pub",
    )  # fmt: skip
    assert code == 2 and "not signed by 1 of the current keys (--current-key)" in err
    assert len(err.splitlines()) == 1 and not out.exists()


def test_without_the_current_keys_nothing_is_signed(
    keys: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A rotation the vehicles cannot apply would ride in every bundle for good (the
    chain only grows): without the keys they trust now to check it against, nothing is
    written (it was a warning, and such a rotation was written)."""
    out = keys / "rotation.signed.json"
    code, said, err = run(
        capsys, "release", "rotate-keys", "--version", 3, "--new-key", keys / "new.pub",
        "--key", keys / "new.key", "--out", out,
    )  # fmt: skip
    assert (code, said) == (2, "") and not out.exists()
    assert err.startswith("error: --current-key is required: the public keys the vehicles")
    assert len(err.splitlines()) == 1


NEW = ["--version", 2, "--new-key", "new.pub", "--key", "new.key", "--current-key", "new.pub"]


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        ([*NEW, "--version", 1], "--version must be at least 2"),
        ([*NEW, "--new-key", "nope.pub"], "--new-key {dir}/nope.pub: No such file"),
        ([*NEW, "--new-key", "new.key"], "--new-key {dir}/new.key: not a PEM public key"),
        (
            [*NEW, "--new-threshold", 2],
            "--new-threshold must be at most the 1 distinct key(s) given (--new-key), not 2",
        ),
        ([*NEW, "--key", "new.pub"], "--key {dir}/new.pub: not an unencrypted PEM private key"),
        ([*NEW, "--key", "nope.key"], "--key {dir}/nope.key: No such file"),
        ([*NEW, "--current-key", "old.key"], "--current-key {dir}/old.key: not a PEM public key"),
        (
            [*NEW, "--current-threshold", 2],
            "--current-threshold must be at most the 1 distinct key(s) given (--current-key)",
        ),
        ([*NEW, "--new-threshold", 0], "--new-threshold must be at least 1, not 0"),
    ],
)
def test_rotate_keys_bad_input_is_one_line_naming_the_flag(
    keys: Path, capsys: pytest.CaptureFixture[str], argv: list[object], said: str
) -> None:
    given = [keys / a if isinstance(a, str) and "." in a else a for a in argv]
    out = keys / "rotation.signed.json"
    code, _, err = run(capsys, "release", "rotate-keys", *given, "--out", out)
    assert code == 2 and not out.exists()
    assert err.startswith(f"error: {said.format(dir=keys)}") and "\n" not in err


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (
            ["--release-key", "old.pub", "--threshold", 3],
            "--threshold must be at most the 1 distinct key(s) given (--release-key), not 3",
        ),
        (["--release-key", "old.pub", "--threshold", 0], "--threshold must be at least 1, not 0"),
        (["--release-key", "nope.pub"], "--release-key {dir}/nope.pub: No such file or directory"),
        (["--release-key", "old.key"], "--release-key {dir}/old.key: not a PEM public key"),
        (
            ["--release-key", "old.pub", "--control-plane-key", "cp.key"],
            "--control-plane-key {dir}/cp.key: not a PEM public key",
        ),
    ],
)
def test_agent_trust_bad_input_is_one_line_naming_the_flag_and_file(
    keys: Path, capsys: pytest.CaptureFixture[str], argv: list[object], said: str
) -> None:
    given = [keys / a if isinstance(a, str) and "." in a else a for a in argv]
    if "--control-plane-key" not in argv:
        given += ["--control-plane-key", keys / "cp.pub"]
    out = keys / "trust.json"
    code, _, err = run(capsys, "agent", "trust", *given, "--out", out)
    assert code == 2 and not out.exists()
    assert err.startswith(f"muto agent: {said.format(dir=keys)}") and "\n" not in err


def test_verify_names_the_pubkey_flag_and_file(
    keys: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        capsys, "release", "verify", keys / "x.json", "--pubkey", keys / "old.key"
    )  # fmt: skip
    assert (code, err) == (2, f"error: --pubkey {keys}/old.key: not a PEM public key: "
                              "no BEGIN/END PUBLIC KEY block")  # fmt: skip


def test_the_documented_rotation_commands_make_a_rotation_a_vehicle_applies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/trust.md's console block of `rotate-keys`, after the CLI example's `keygen`."""
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```console\n(.*?)```", DOC.read_text(), re.S)
    (block,) = [b for b in blocks if "muto release rotate-keys" in b]
    commands = [line[2:] for line in block.splitlines() if line.startswith("$ ")]
    assert main(["release", "keygen", "--out", "keys"]) == 0
    for command in commands:
        argv = shlex.split(command)
        assert argv[0] == "muto" and main(argv[1:]) == 0, command
    config = TrustConfig(
        release_keys=KeySet(keys=[Path("keys/release.pub").read_text()]),
        control_plane_keys=KeySet(keys=[Path("keys/release.pub").read_text()]),
    )
    envelope = decode(Path("rotation-2.signed.json").read_bytes(), Envelope)
    rotated = apply_key_rotation(config, envelope)
    assert rotated.release_keys.keys == [Path("keys/release-2.pub").read_text()]
