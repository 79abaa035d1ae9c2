"""The fleet CLI against a real `muto cloud serve`, from the operator's seat: a watch whose
stdout is a pipe or a file shows each change as it comes and ends when its reader does;
bad input (a token, a file, an id) is one line and exit 2 before any request; a push
that will be refused uploads nothing."""

from __future__ import annotations

import itertools
import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from tests.support.api_server import unique, vehicle_body
from tests.support.fleet_cli import Operator, fleet_with_rollout, operator_at_a_server, report
from tests.support.releases import release_envelope


@pytest.fixture(scope="module")
def op(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    with operator_at_a_server(tmp_path_factory) as found:
        yield found


def watch(op: Operator, rollout_id: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "muto.cli", "rollouts", "status", rollout_id, "--watch",
         "--interval", "0.2", "--timeout", "120", "--token-file", str(op.token_file), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=op.home,
        env=op.env(MUTO_URL=op.server.url),
    )  # fmt: skip


def line_within(stream: IO[str], seconds: float) -> str:
    ready, _, _ = select.select([stream], [], [], seconds)
    assert ready, f"nothing written in {seconds} s"
    return stream.readline()


def test_a_watch_into_a_pipe_shows_the_rollout_now_and_ends_with_its_reader(
    op: Operator,
) -> None:
    """`| head -3` hung until the rollout ended: rich's Live off a terminal wrote only
    its last frame."""
    _, _, rollout_id = fleet_with_rollout(op)  # in canary, and nothing will change it
    with watch(op, rollout_id) as watching:  # closes its pipes
        try:
            assert stdout_line(watching).startswith(f"rollout {rollout_id}")
            assert watching.poll() is None  # still watching: the rollout runs
            assert watching.stdout is not None and watching.stderr is not None
            watching.stdout.close()  # the reader leaves, as head does after its lines
            assert watching.wait(timeout=30) == 141
            assert "Traceback" not in watching.stderr.read()
        finally:
            watching.kill()


def stdout_line(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    return line_within(process.stdout, 30)


def test_a_json_watch_writes_each_change_as_a_line_as_it_comes(op: Operator) -> None:
    _, stack, rollout_id = fleet_with_rollout(op)
    with watch(op, rollout_id, "-o", "json") as watching:
        try:
            first = json.loads(stdout_line(watching))
            assert (first["rolloutId"], first["state"]) == (rollout_id, "canary")
            report(op, op.json("rollouts", "get", rollout_id), "canary", stack)
            while (now := json.loads(stdout_line(watching)))["state"] == "canary":
                pass
            assert now["state"] == "wave"  # seen while it runs, not only at the end
            report(op, now, "wave", stack)
            out, err = watching.communicate(timeout=120)
        finally:
            watching.kill()
    assert watching.returncode == 0, err
    frames = [json.loads(line) for line in out.splitlines()]
    assert frames[-1]["state"] == "completed"
    assert all(a != b for a, b in itertools.pairwise(frames))  # changes only


def test_a_table_watch_into_a_file_grows_while_it_watches(op: Operator, tmp_path: Path) -> None:
    _, _, rollout_id = fleet_with_rollout(op)
    log = tmp_path / "watch.log"
    argv = ["--interval", "0.2", "--timeout", "120", "--token-file", str(op.token_file)]
    with (
        log.open("w") as out,
        subprocess.Popen(
            [sys.executable, "-m", "muto.cli", "rollouts", "status", rollout_id, "--watch", *argv],
            stdout=out,
            stderr=subprocess.DEVNULL,
            cwd=op.home,
            env=op.env(MUTO_URL=op.server.url),
        ) as watching,
    ):
        try:
            deadline = time.monotonic() + 60
            while log.stat().st_size == 0:
                assert watching.poll() is None, "ended before writing"
                assert time.monotonic() < deadline
                time.sleep(0.1)
            assert watching.poll() is None  # written while it watches
            assert op.json("rollouts", "pause", rollout_id)["paused"] is True
            assert watching.wait(timeout=60) == 13
        finally:
            watching.kill()
    written = log.read_text()
    assert written.count(f"rollout {rollout_id}") == 2, written  # a frame per change
    assert "canary (paused)" in written.split(f"rollout {rollout_id}")[-1]


def bad_token_file(op: Operator, content: bytes) -> str:
    path = op.home / unique("token")
    path.write_bytes(content)
    return str(path)


@pytest.mark.parametrize(
    ("env_token", "file_content", "named"),
    [
        ("tok€n", None, "MUTO_TOKEN"),
        ("a\nb", None, "MUTO_TOKEN"),
        (None, b"x\xff", "the token file"),
        (None, b"muto_abc\x01def", "the token file"),
    ],
)
def test_a_token_that_is_no_token_is_refused_naming_where_it_came_from(
    op: Operator, env_token: str | None, file_content: bytes | None, named: str
) -> None:
    extra = {"MUTO_TOKEN": env_token} if env_token else {}
    flags = ("--token-file", bad_token_file(op, file_content)) if file_content else ()
    done = op.run("vehicles", "list", *flags, env=op.env(MUTO_URL=op.server.url, **extra))
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"error: {named}") and done.stderr.count("\n") == 1
    assert "muto_abc" not in done.stderr  # never the secret


def test_an_agent_config_that_is_not_utf8_is_one_line_and_exit_2(op: Operator) -> None:
    config = op.home / unique("cfg")
    config.write_bytes(b"heartbeatS: \xff\n")
    flags = ("--agent-config", str(config), "--token-file", str(op.token_file))
    for verb in (
        ("desired", "assign", "--vehicle", "v1", "--release", "s@1"),
        ("rollouts", "create", "--selector", "a=b", "--release", "s@1"),
    ):
        done = op.run(*verb, *flags)
        assert done.returncode == 2 and str(config) in done.stderr, done.stderr
        assert done.stderr.count("\n") == 1


@pytest.mark.parametrize(
    "argv",
    [
        ("desired", "assign", "--vehicle", "bad*id", "--release", "s@1.0.0"),
        ("desired", "assign", "--selector", "a=b", "--release", "s/x@1.0.0"),
        ("rollouts", "create", "--selector", "a=b", "--release", "s@1.0.0", "--rollout-id", "r/1"),
        ("tokens", "create", "--vehicle", "x/y"),
        ("tokens", "revoke", "bad/../id"),
        ("vehicles", "register", "a b"),
        ("audit", "timeline", "--vehicle", "x/y"),
    ],
)
def test_an_id_the_api_forbids_is_refused_before_any_request(
    op: Operator, argv: tuple[str, ...]
) -> None:
    log = requests_logged(op)
    done = op.run(*argv, "--token-file", str(op.token_file))
    assert done.returncode == 2 and " id" in done.stderr, done.stderr
    assert requests_logged(op) == log  # nothing asked


def requests_logged(op: Operator) -> list[str]:
    """The server's access log once it has settled: a line is written after its response
    is sent, so the last requests of the test before (or of the start's readiness probes)
    may still be coming when this test begins."""
    settled, seen = 0, op.server.log.read_text()
    while settled < 3:
        time.sleep(0.2)
        now = op.server.log.read_text()
        settled, seen = (settled + 1, now) if now == seen else (0, now)
    return seen.splitlines()


def signed_release(op: Operator, work: Path, stack: str, content: bytes) -> str:
    (work / "dist").mkdir(parents=True)
    (work / "dist" / "app.tar.gz").write_bytes(content)
    (work / "release.yaml").write_text(
        f"stackName: {stack}\nversion: 1.0.0\n"
        "artifacts:\n  - {type: archive, ref: app.tar.gz}\nlaunch: {command: [./run.sh]}\n"
    )
    keys = op.home / "push-keys"
    if not keys.exists():
        assert op.run("release", "keygen", "--out", str(keys)).returncode == 0
    signing = op.run(
        "release", "sign", str(work / "release.yaml"), "--key", str(keys / "release.key"),
        "--artifact-dir", str(work / "dist"), "--hosted",
        "--out", str(work / "dist" / "release.signed.json"),  # beside its artifact
    )  # fmt: skip
    assert signing.returncode == 0, signing.stderr
    return str(work / "dist" / "release.signed.json")


def test_a_push_the_api_would_refuse_uploads_nothing(op: Operator) -> None:
    """A different-content stack@version was uploaded, then refused 409: an orphan
    artifact of up to 4 GiB in the control plane's store."""
    stack = unique("imm")
    first = signed_release(op, op.home / unique("a"), stack, b"first")
    op.ok("releases", "push", first)
    other_content = os.urandom(1000)
    second = signed_release(op, op.home / unique("b"), stack, other_content)
    refused = op.run("releases", "push", second, "--token-file", str(op.token_file))
    assert refused.returncode == 1, refused.stderr
    assert refused.stderr.startswith("error: conflict: ") and "immutable" in refused.stderr
    assert "uploaded app.tar.gz" not in refused.stderr
    digest = json.loads(Path(second).read_text())  # the artifact it would have uploaded
    assert op.api.head(f"/artifacts/{artifact_digest(digest)}").status_code == 404

    big = op.home / unique("big") / "release.signed.json"
    big.parent.mkdir()
    envelope = json.loads(Path(second).read_text())
    envelope["signatures"] = envelope["signatures"] * 20_000  # over the API's 1 MiB body
    big.write_text(json.dumps(envelope))
    too_large = op.run(
        "releases", "push", str(big), "--artifact-dir", str(Path(second).parent),
        "--token-file", str(op.token_file),
    )  # fmt: skip
    assert too_large.returncode == 2 and "1048576" in too_large.stderr, too_large.stderr
    assert "uploaded app.tar.gz" not in too_large.stderr
    assert op.api.head(f"/artifacts/{artifact_digest(envelope)}").status_code == 404


def artifact_digest(envelope: dict[str, object]) -> str:
    import base64

    manifest = json.loads(base64.b64decode(str(envelope["payload"])))
    digest: str = manifest["artifacts"][0]["digest"]
    return digest


def test_a_push_of_the_registered_digest_still_adds_its_signature(op: Operator) -> None:
    stack = unique("same")
    assert op.api.post("/vehicles", json=vehicle_body(unique("v"))).status_code == 201
    assert op.api.post("/releases", json=release_envelope(stack, "1.0.0")).status_code == 201
    signed = op.home / unique("s") / "release.signed.json"
    signed.parent.mkdir()
    signed.write_text(json.dumps(release_envelope(stack, "1.0.0")))
    again = op.ok("releases", "push", str(signed))  # the same digest, another key
    assert "added the signature of key" in again.stderr
