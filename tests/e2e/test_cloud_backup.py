"""`muto cloud backup` (docs/deploy.md, "Backup and restore"): a copy of a serving SQLite
data dir that a restore can start from: the views copied before the log (never ahead of
it: the start refuses such views), each database through SQLite's online backup (the
writes still in the -wal included), the signing key kept private. Served, the copy
holds every write answered before the backup and none after, its views equal to the
log's, the audit chain intact."""

from __future__ import annotations

import sqlite3
import stat
import subprocess
from contextlib import closing
from pathlib import Path

from muto.cloud.backup import back_up
from muto.cloud.settings import Settings
from tests.support.api_server import MUTO, ApiServer, vehicle_body


def muto(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MUTO, *args], capture_output=True, text=True, timeout=90)


def register(server: ApiServer, secret: str, *vehicle_ids: str) -> None:
    with server.client(secret) as http:
        for vehicle_id in vehicle_ids:
            answer = http.post("/vehicles", json=vehicle_body(vehicle_id))
            assert answer.status_code == 201, answer.text


def test_a_backup_taken_while_serving_restores_what_was_answered_before_it(
    tmp_path: Path,
) -> None:
    server = ApiServer(tmp_path / "cloud")
    secret, _ = server.issue("operator")["operator"]
    backup = tmp_path / "backup"
    server.start(wait="/readyz")
    try:
        register(server, secret, "before-1", "before-2")
        done = muto("cloud", "backup", "--data-dir", str(server.data_dir), str(backup))
        assert done.returncode == 0, done.stderr
        register(server, secret, "after-1")
    finally:
        assert server.stop() == 0
    listed = [line.split()[0] for line in done.stdout.splitlines()]
    assert listed[:2] == [str(backup / "views.db"), str(backup / "events.db")]
    assert str(backup / "keys") in listed
    key = backup / "keys" / "control-plane.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_bytes() == (server.data_dir / "keys" / "control-plane.key").read_bytes()

    restored = ApiServer(backup, name="restored")
    restored.start(wait="/readyz")  # not refused: its views are not ahead of its log
    try:
        with restored.client(secret) as http:
            found = {v["vehicleId"] for v in http.get("/vehicles").json()["data"]}
    finally:
        assert restored.stop() == 0
    assert found == {"before-1", "before-2"}
    verified = muto("audit", "verify", "--data-dir", str(backup))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.startswith("intact")


def test_a_backup_refuses_what_it_cannot_do_and_writes_nothing(tmp_path: Path) -> None:
    server = ApiServer(tmp_path / "cloud")
    server.issue("operator")  # the store exists
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("an operator's file")
    cases = [
        (["--data-dir", str(server.data_dir), str(taken)], "is not an empty directory"),
        (["--data-dir", str(tmp_path / "nowhere"), str(tmp_path / "b1")], "is not there"),
        (
            ["--database-url", "postgresql+psycopg://u@127.0.0.1/db", str(tmp_path / "b2")],
            "pg_dump",
        ),
    ]
    for argv, said in cases:
        done = muto("cloud", "backup", *argv)
        assert done.returncode == 2, done.stderr
        assert said in done.stderr and done.stderr.count("\n") == 1, done.stderr
        assert "Traceback" not in done.stderr
    assert [p.name for p in taken.iterdir()] == ["keep.txt"]
    assert not (tmp_path / "b1").exists() and not (tmp_path / "b2").exists()


def test_an_event_log_elsewhere_is_the_one_backed_up(tmp_path: Path) -> None:
    """`--database-url sqlite:///...` puts the log outside the data dir: that file is
    copied as the backup's events.db (the code review: a stale data_dir/events.db was)."""
    data, elsewhere = tmp_path / "cloud", tmp_path / "disk2"
    data.mkdir()
    elsewhere.mkdir()
    for path, rows in ((data / "views.db", 1), (elsewhere / "log.db", 3), (data / "events.db", 9)):
        with closing(sqlite3.connect(path)) as db, db:
            db.execute("CREATE TABLE t (n INTEGER)")
            db.executemany("INSERT INTO t VALUES (?)", [(n,) for n in range(rows)])
    settings = Settings(data_dir=data, database_url=f"sqlite:///{elsewhere / 'log.db'}")
    back_up(settings, tmp_path / "backup")
    with closing(sqlite3.connect(tmp_path / "backup" / "events.db")) as db:
        assert db.execute("SELECT count(*) FROM t").fetchone() == (3,)
