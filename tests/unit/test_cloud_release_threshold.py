"""The cloud's release threshold (`--release-threshold`, MUTO_RELEASE_THRESHOLD): k of
its release keys, checked by name before anything is opened. It was always 1, so a
release signed by one of three keys was registered while 2-of-3 vehicles rejected it.
tests/integration/test_cloud_serve_flags.py registers releases against it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from muto.cloud.settings import ENVIRONMENT, Settings
from muto.cloud.signing import release_keyset
from muto.trust.keys import Signer

OPTION = "release_threshold (--release-threshold, MUTO_RELEASE_THRESHOLD)"


def key_files(tmp_path: Path, n: int) -> tuple[Path, ...]:
    paths = tuple(tmp_path / f"k{i}.pub" for i in range(n))
    for path in paths:
        path.write_text(Signer.generate().public_pem)
    return paths


def test_the_threshold_comes_from_the_flag_then_the_environment_then_one() -> None:
    assert Settings.from_env({}).release_threshold == 1
    assert Settings.from_env({"MUTO_RELEASE_THRESHOLD": "2"}).release_threshold == 2
    flag_first = Settings.from_env({"MUTO_RELEASE_THRESHOLD": "2"}, release_threshold=3)
    assert flag_first.release_threshold == 3
    assert ENVIRONMENT["MUTO_RELEASE_THRESHOLD"] == "release_threshold"


@pytest.mark.parametrize(
    ("environ", "overrides", "named"),
    [
        ({}, {"release_threshold": 0}, f"{OPTION} must be at least 1, not 0"),
        ({"MUTO_RELEASE_THRESHOLD": "-1"}, {}, f"{OPTION} must be at least 1, not -1"),
        ({"MUTO_RELEASE_THRESHOLD": "two"}, {}, "MUTO_RELEASE_THRESHOLD must be a number"),
    ],
)
def test_a_threshold_below_one_is_refused_by_name(
    environ: dict[str, str], overrides: dict[str, int], named: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(named)):
        Settings.from_env(environ, **overrides)


def test_the_keyset_needs_k_of_the_distinct_keys(tmp_path: Path) -> None:
    keys = key_files(tmp_path, 3)
    found = release_keyset(Settings(release_keys=keys, release_threshold=2))
    assert found is not None and (found.threshold, len(found.trusted())) == (2, 3)
    assert release_keyset(Settings()) is None  # no keys: the vehicles alone check


@pytest.mark.parametrize(
    ("keys", "k", "named"),
    [
        (3, 4, f"{OPTION} must be at most the 3 distinct release key(s) given (--release-key)"),
        (0, 2, f"{OPTION} 2 needs release keys (--release-key); none given"),
    ],
)
def test_a_threshold_above_the_keys_is_refused_by_name(
    tmp_path: Path, keys: int, k: int, named: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(named)):
        release_keyset(Settings(release_keys=key_files(tmp_path, keys), release_threshold=k))


def test_a_key_listed_twice_counts_once(tmp_path: Path) -> None:
    (one,) = key_files(tmp_path, 1)
    twice = tmp_path / "again.pub"
    twice.write_text(one.read_text())
    with pytest.raises(ValueError, match=re.escape("at most the 1 distinct release key(s)")):
        release_keyset(Settings(release_keys=(one, twice), release_threshold=2))


def test_a_key_file_that_is_missing_or_not_a_key_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=re.escape(f"--release-key {tmp_path / 'gone.pub'}: ")):
        release_keyset(Settings(release_keys=(tmp_path / "gone.pub",)))
    (tmp_path / "junk.pub").write_text("not a key")
    with pytest.raises(ValueError, match=re.escape("junk.pub: not a PEM public key")):
        release_keyset(Settings(release_keys=(tmp_path / "junk.pub",)))


@pytest.mark.parametrize("command", [["serve", "--no-mqtt"], ["token", "create", "--operator"]])
def test_a_bad_threshold_ends_a_cloud_command_by_name(tmp_path: Path, command: list[str]) -> None:
    (tmp_path / "keys").mkdir()
    keys, data = key_files(tmp_path / "keys", 2), tmp_path / "data"
    flags = [f for key in keys for f in ("--release-key", str(key))]
    done = subprocess.run(
        [sys.executable, "-m", "muto.cli", "cloud", *command, *flags,
         "--release-threshold", "3", "--data-dir", str(data)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert f"muto cloud: {OPTION} must be at most the 2 distinct" in done.stderr
    assert "Traceback" not in done.stderr
    assert not data.exists()  # refused before anything was opened
