"""The manifest loader (`muto release sign`): a key given twice, a file too large, one
that is not UTF-8 or whose signed payload would be over the cap are refused with a
WireError (one line, exit 2), and no error quotes the file's text."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from muto.cli import main
from muto.domain.wire import WireError
from muto.fleetctl.connection import USAGE, FleetError
from muto.fleetctl.desired import read_agent_config
from muto.trust import releases
from muto.trust.dsse import MAX_PAYLOAD_CHARS
from muto.trust.releases import load_manifest

DIGEST = "sha256:" + "a" * 64
BODY = (
    f"artifacts:\n  - {{type: archive, ref: a.tar.gz, digest: '{DIGEST}', size: 1}}\n"
    "launch: {command: [sh]}\n"
)


def write(tmp_path: Path, text: str | bytes, name: str = "release.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, str):
        path.write_text(text)
    else:
        path.write_bytes(text)
    return path


def test_a_well_formed_manifest_loads(tmp_path: Path) -> None:
    release = load_manifest(write(tmp_path, f"stackName: s\nversion: 1.0.0\n{BODY}"))
    assert (release.stack_name, release.version) == ("s", "1.0.0")


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (f"stackName: s\nstackName: t\nversion: 1.0.0\n{BODY}", "stackName at line 2"),
        (f"stackName: s\nversion: 1.0.0\n{BODY}launch: {{command: [x]}}\n", "launch at line 6"),
        (
            f"stackName: s\nversion: 1.0.0\n{BODY}".replace("[sh]}", "[sh], command: [x]}"),
            "command at line 5",
        ),
    ],
)
def test_a_key_given_twice_is_refused_naming_it_and_its_line(
    tmp_path: Path, text: str, named: str
) -> None:
    with pytest.raises(WireError, match=f"duplicate key {named}"):
        load_manifest(write(tmp_path, text))


def test_a_merge_may_still_override_a_key(tmp_path: Path) -> None:
    text = f"stackName: s\nversion: 1.0.0\n{BODY}".replace(
        "launch: {command: [sh]}", "base: &b {command: [sh]}\nlaunch: {<<: *b, command: [x]}"
    )
    with pytest.raises(WireError, match="unknown field `base`"):  # merged, then refused
        load_manifest(write(tmp_path, text))


def test_a_file_over_the_bound_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with big.open("w") as f:
        f.write(f"stackName: s\nversion: 1.0.0\n{BODY}compat: |\n")
        line = "  " + "x" * 78 + "\n"
        f.write(line * (40 * 1024 * 1024 // len(line)))  # 40 MiB
    started = time.monotonic()
    with pytest.raises(WireError, match=f"larger than {releases.MAX_MANIFEST_BYTES} bytes"):
        load_manifest(big)
    assert time.monotonic() - started < 2


def test_a_manifest_whose_signed_payload_would_be_over_the_cap_is_refused(
    tmp_path: Path,
) -> None:
    value = "v" * 200_000  # one value, six times through an alias: a small file
    env = ", ".join(f"K{i}: *v" for i in range(5))
    head = BODY.replace("launch: {command: [sh]}\n", "")
    text = (
        f"stackName: s\nversion: 1.0.0\n{head}launch:\n  launchFile: &v {value}\n  env: {{{env}}}\n"
    )
    path = write(tmp_path, text)
    assert path.stat().st_size < releases.MAX_MANIFEST_BYTES
    with pytest.raises(WireError, match=f"over the {MAX_PAYLOAD_CHARS}"):
        load_manifest(path)


def test_a_file_that_is_not_utf8_is_a_wire_error(tmp_path: Path) -> None:
    with pytest.raises(WireError, match="not UTF-8"):
        load_manifest(write(tmp_path, b"stackName: s\xff\xfe\nversion: 1.0.0\n"))


SECRET = "root:$y$j9T$s3cr3tHash:20228:0:99999:7:::"


@pytest.mark.parametrize(
    "text",
    [
        f"{SECRET}\n",  # /etc/shadow: a mapping whose key is the line
        f"{SECRET}: x\n",  # malformed: PyYAML's message quotes the line
        f"stackName: s\n  {SECRET} [\n",
    ],
)
def test_no_error_quotes_the_file(tmp_path: Path, text: str) -> None:
    target = write(tmp_path, text, "elsewhere")
    (tmp_path / "release.yaml").symlink_to(target)
    with pytest.raises(WireError) as refused:
        load_manifest(tmp_path / "release.yaml")
    said = f"{refused.value.path} {refused.value.message}"
    assert "s3cr3t" not in said and "root" not in said, said


def test_sign_says_it_in_one_line_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["release", "keygen", "--out", str(tmp_path / "keys")]) == 0
    capsys.readouterr()
    manifest = write(tmp_path, b"stackName: s\xff\xfe\nversion: 1.0.0\n")
    code = main(["release", "sign", str(manifest), "--key", str(tmp_path / "keys/release.key")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "not UTF-8" in err, err


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (
            b"heartbeatS: 10\nheartbeatS: 20\n",
            "duplicate key heartbeatS at line 2 (first at line 1)",
        ),
        (b"heartbeatS: 0\n", "Expected `int` >= 1 - at `$.heartbeatS`"),
        (b"a" * (64 * 1024 + 1), "larger than 65536 bytes: not an agentConfig"),
        (b"- 1\n", "an agentConfig is a mapping"),
        (b"root:*:20228:0:99999:7:::\n", "an unknown key, not named like a field - at `$`"),
    ],
)
def test_an_agent_config_is_read_by_the_manifest_loaders_rules(
    tmp_path: Path, content: bytes, said: str
) -> None:
    """`--agent-config` (desired assign, rollouts create): bounded, no key twice, checked
    here as the API checks it, and never quoted back (a file named by mistake, the
    shadow file through a symlink, was sent to the control plane and echoed)."""
    named = tmp_path / "config.yaml"
    named.write_bytes(content)
    with pytest.raises(FleetError) as refused:
        read_agent_config(str(named))
    assert refused.value.exit_code == USAGE
    assert said in refused.value.message
    assert "20228" not in refused.value.message


def test_a_good_agent_config_is_sent_as_written(tmp_path: Path) -> None:
    named = tmp_path / "config.yaml"
    named.write_text("heartbeatS: 20\nlogLevel: debug\n")
    assert read_agent_config(str(named)) == {"heartbeatS": 20, "logLevel": "debug"}
