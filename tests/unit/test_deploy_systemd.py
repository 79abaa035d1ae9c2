"""deploy/systemd/muto-agent.service: systemd accepts it (`systemd-analyze verify`
where systemd is installed; a parse of its own elsewhere), it restarts the agent for
ever within start limits, and `muto agent run` takes every flag it passes."""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from muto.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "systemd" / "muto-agent.service"


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    text = UNIT.read_text().replace("\\\n", " ")  # systemd's line continuations
    parser.read_string(text)
    return parser


def exec_start() -> list[str]:
    """ExecStart with the EnvironmentFile's ${VARIABLES} given example values."""
    command = shlex.split(unit()["Service"]["ExecStart"])
    return [re.sub(r"\$\{(\w+)\}", lambda m: f"example-{m.group(1).lower()}", a) for a in command]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    # verify wants ExecStart's binary to exist: point it at this checkout's `muto`.
    muto = Path(sys.executable).with_name("muto")
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace("/opt/muto/bin/muto", str(muto)))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    complaints = [line for line in done.stderr.splitlines() if UNIT.name in line]
    assert done.returncode == 0 and complaints == [], done.stderr


def test_the_agent_restarts_for_ever_within_start_limits() -> None:
    parsed = unit()
    service = parsed["Service"]
    assert service["Restart"] == "always"
    assert float(service["RestartSec"]) > 0
    assert int(parsed["Unit"]["StartLimitBurst"]) > 1
    assert int(parsed["Unit"]["StartLimitIntervalSec"]) > 0
    assert service["EnvironmentFile"] == "/etc/muto/agent.env"
    assert service["StateDirectory"] == "muto-agent"
    assert parsed["Install"]["WantedBy"] == "multi-user.target"


def test_no_hardening_option_breaks_a_runtime() -> None:
    """podman needs setuid helpers, namespaces and cgroups; ROS 2 needs multicast."""
    service = unit()["Service"]
    breaking = ("NoNewPrivileges", "RestrictNamespaces", "ProtectControlGroups")
    breaking += ("PrivateNetwork", "RestrictAddressFamilies", "MemoryDenyWriteExecute")
    for option in breaking:
        assert option not in service, option
    assert service["ProtectSystem"] == "full"
    assert service["PrivateTmp"] == "yes"


def test_muto_agent_run_takes_every_flag_the_unit_passes() -> None:
    command = exec_start()
    assert command[0] == "/opt/muto/bin/muto"
    assert command[1:3] == ["agent", "run"]
    assert "--token" not in command, "the token belongs in the EnvironmentFile, not in ps"
    args = build_parser("agent").parse_args(command[1:])
    assert args.data_dir == "/var/lib/muto-agent"
    assert args.runtime == "ros2_launch"
