"""`muto agent run` refuses to start on what it cannot run with, in one line that names
the option or the file (exit 2, no traceback), before it touches the data dir: numeric
options out of bounds, a cloud URL that is not one, a damaged trust store or journal in
the data dir. `muto agent journal verify` reports a damaged journal as a problem (exit 1)
and the other journal commands refuse it in one line (exit 2).

Review #7, #10, #11: a damaged trust.json started an agent whose every pass died; a
damaged journal.db, `--archive-max-mb -1` gave tracebacks; `--poll-s 0` polled ~1000
times a second; `--cloud-url notaurl` sat idle saying nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from muto.agent.journal import Journal
from muto.agent.journal import events as ev
from muto.domain.wire import encode
from muto.trust import KeySet, Signer, TrustConfig, TrustStore
from tests.support.agent_cli import muto, refused, run_agent
from tests.support.agent_rig import T0


def provisioned(data_dir: Path) -> Path:
    """A data dir as a first start leaves it: a trust store and a journal with events."""
    data_dir.mkdir(mode=0o700)
    keys = KeySet(keys=[Signer.generate().public_pem])
    TrustStore.create(
        data_dir / "trust.json", TrustConfig(release_keys=keys, control_plane_keys=keys)
    )
    with Journal.open(data_dir) as journal:
        for i in range(50):
            journal.append(*[ev.RuntimeStopped(at=T0, reason=f"{i}" * 100)] * 5)
    return data_dir


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--archive-max-mb", "-1"),
        ("--archive-max-file-mb", "0"),
        ("--archive-max-files", "-3"),
        ("--poll-s", "0"),
        ("--poll-s", "-5"),
        ("--poll-s", "nan"),
        ("--cache-budget-mb", "0"),
        ("--metrics-port", "70000"),
        ("--min-battery-pct", "101"),
        ("--min-battery-pct", "-1"),
        ("--min-battery-pct", "nan"),
        ("--cloud-url", "notaurl"),
        ("--cloud-url", "ftp://muto.example"),
        ("--cloud-url", "https://"),
        ("--mqtt-url", "broker:1883"),
    ],
)
def test_run_refuses_an_option_naming_it(tmp_path: Path, option: str, value: str) -> None:
    trust = tmp_path / "trust.json"
    keys = KeySet(keys=[Signer.generate().public_pem])
    trust.write_bytes(encode(TrustConfig(release_keys=keys, control_plane_keys=keys)))
    done = run_agent(tmp_path / "data", "--trust", str(trust), option, value)
    refused(done, option)
    assert not (tmp_path / "data").exists()  # refused before anything was made


def test_run_refuses_a_damaged_trust_store_naming_the_file_and_the_field(tmp_path: Path) -> None:
    data = provisioned(tmp_path / "data")
    trust = data / "trust.json"
    stored = json.loads(trust.read_text())
    stored["config"]["releaseKeys"]["threshold"] = "one"
    trust.write_text(json.dumps(stored))
    refused(run_agent(data), str(trust), "$.config.releaseKeys.threshold")
    trust.write_text(trust.read_text()[:40])  # a torn write
    refused(run_agent(data), str(trust), "malformed JSON")


def test_run_refuses_a_damaged_journal_naming_the_file_and_the_way_out(tmp_path: Path) -> None:
    data = provisioned(tmp_path / "data")
    db = data / "journal.db"
    with db.open("r+b") as f:
        f.truncate(5000)  # a torn write, a bad sector
    line = refused(run_agent(data), str(db), "damaged")
    assert "aside" in line and "docs/agent.md" in line


def test_journal_commands_report_a_damaged_journal_without_a_traceback(tmp_path: Path) -> None:
    data = provisioned(tmp_path / "data")
    db = data / "journal.db"
    with db.open("r+b") as f:
        f.truncate(5000)
    verified = muto("agent", "journal", "verify", "--data-dir", str(data), "--json")
    assert verified.returncode == 1 and "Traceback" not in verified.stderr, verified.stderr
    found = json.loads(verified.stdout)
    assert not found["ok"] and any(str(db) in p and "damaged" in p for p in found["problems"])
    refused(muto("agent", "journal", "list", "--data-dir", str(data)), str(db), "damaged")
    refused(muto("agent", "journal", "verify", "--data-dir", str(tmp_path)), "no journal")
