"""Every data file and directory is created with an explicit mode, whatever the umask
(issue #14 item 10): under `umask 000` directories are 0700, secrets and databases 0600,
public keys 0644, and nothing is group- or world-writable. The token never goes in argv."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from muto.agent.cli import TOKEN_ENV, given_token
from muto.agent.compose import RunOptions, local_agent
from muto.cli import main
from muto.cloud.bootstrap import ControlPlane
from muto.cloud.settings import Settings
from muto.domain.wire import encode
from muto.trust import KeySet, Signer, TrustConfig


@pytest.fixture
def umask_000() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def modes(root: Path) -> dict[str, int]:
    """Every path under `root` (and root itself) with its permission bits."""
    found = {".": stat.S_IMODE(root.lstat().st_mode)}
    for path in root.rglob("*"):
        found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def assert_private(found: dict[str, int], root: Path) -> None:
    for name, mode in found.items():
        path = root / name
        if path.is_dir() and not path.is_symlink():
            assert mode == 0o700, f"{name}: {oct(mode)}"
        assert mode & 0o022 == 0, f"{name} is writable by others: {oct(mode)}"


def test_the_agent_data_dir_is_private_under_umask_000(tmp_path: Path, umask_000: None) -> None:
    signer = Signer.generate()
    trust = tmp_path / "trust-config.json"
    keys = KeySet(keys=[signer.public_pem])
    trust.write_bytes(encode(TrustConfig(release_keys=keys, control_plane_keys=keys)))
    data = tmp_path / "var" / "lib" / "agent"
    options = RunOptions("car-1", data, runtime="process", trust=trust, token="s3cret")

    async def once() -> None:
        agent = local_agent(options)
        agent.parts.artifacts.pin([f"sha256:{'a' * 64}"])
        await agent.start(loop=False)  # journals AgentStarted: journal.db, -wal, -shm
        await agent.stop()

    asyncio.run(once())
    found = modes(data)
    assert_private(found, data)
    for secret in ("token", "trust.json", "journal.db", "journal.lock", "cache/pins.json"):
        assert found[secret] == 0o600, f"{secret}: {oct(found[secret])}"
    assert {"cache", "cache/sha256", "cache/partial", "runtime"} <= found.keys()
    for parent in (data.parent, data.parent.parent):  # created for it: private as well
        assert stat.S_IMODE(parent.stat().st_mode) == 0o700


def test_the_cloud_data_dir_is_private_under_umask_000(tmp_path: Path, umask_000: None) -> None:
    data = tmp_path / "cloud" / "data"
    plane = ControlPlane.open(Settings(data_dir=data))
    plane.close()
    found = modes(data)
    assert_private(found, data)
    for secret in ("events.db", "views.db", "keys/control-plane.key"):
        assert found[secret] == 0o600, f"{secret}: {oct(found[secret])}"
    assert found["keys/control-plane.pub"] == 0o644  # a trust anchor: readable, not writable
    assert found["keys"] == 0o700


def test_release_keygen_under_umask_000(
    tmp_path: Path, umask_000: None, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys"
    assert main(["release", "keygen", "--out", str(keys), "--name", "ci"]) == 0
    assert modes(keys) == {".": 0o700, "ci.key": 0o600, "ci.pub": 0o644}


def test_agent_trust_out_under_umask_000(
    tmp_path: Path, umask_000: None, capsys: pytest.CaptureFixture[str]
) -> None:
    pub = tmp_path / "k.pub"
    pub.write_text(Signer.generate().public_pem)
    out = tmp_path / "trust.json"
    argv = ["agent", "trust", "--release-key", str(pub), "--control-plane-key", str(pub)]
    assert main([*argv, "--out", str(out)]) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o644


def test_the_token_comes_from_a_file_or_the_environment(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    assert given_token(str(token_file), {TOKEN_ENV: "from-env"}) == "from-file"
    assert given_token(None, {TOKEN_ENV: " from-env "}) == "from-env"
    assert given_token(None, {}) is None
    token_file.write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        given_token(str(token_file), {})


def test_a_token_in_argv_is_refused_with_what_to_do_instead(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["agent", "run", "--vehicle-id", "v1", "--data-dir", str(tmp_path), "--token", "x"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--token-file" in err and TOKEN_ENV in err
    assert not (tmp_path / "token").exists()
