"""A release registered with one signature, on a fleet whose vehicles need two: the real
cloud (`muto cloud serve`, SQLite or PostgreSQL) and a real agent (`muto agent run`,
simulated runtime, a hosted artifact) whose trust store says 2 of 2 release keys. The
vehicle rejects the bundle (VERIFY_SIGNATURE_FAILED); the operator pushes the same
release signed by the second key (`muto releases push`), the cloud adds that signature
to the registered release, and the vehicle, polling on its own with the ETag of the
bundle it rejected, fetches it again and converges on the same revision: no new
version, no new assignment. So too when the release was registered with a broken
signature by the second key beside the first one's: the valid one replaces it."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from muto.agent.journal import Journal
from muto.domain.release import Artifact, ArtifactType, HealthModel
from muto.domain.vehicle_state import VehicleState
from muto.domain.wire import encode, to_builtins
from muto.trust import KeySet, Signer, TrustConfig, sign_release
from tests.support.api_server import BACKENDS, MUTO, ApiServer, database, vehicle_body
from tests.support.releases import stack_release
from tests.support.trust_kit import flip_signature
from tests.support.waits import WAIT_S, eventually


@pytest.fixture(params=BACKENDS)
def cloud(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[ApiServer, str, list[Signer]]]:
    """The cloud, trusting release keys A and B and needing one of them (as before the
    fleet's threshold was raised), with an operator token."""
    keys = [Signer.generate(), Signer.generate()]
    flags: list[str] = ["--release-threshold", "1"]
    for n, key in enumerate(keys):
        (tmp_path / f"k{n}.pub").write_text(key.public_pem)
        flags += ["--release-key", str(tmp_path / f"k{n}.pub")]
    with database(request.param) as url:
        server = ApiServer(tmp_path / "cloud", url, options=tuple(flags))
        secret = server.issue("operator")["operator"][0]
        server.start()
        try:
            yield server, secret, keys
        finally:
            code = server.stop()
            assert code == 0, server.tail()
            assert server.tracebacks() == []


def agent_run(tmp: Path, server: ApiServer, token: str, trust: Path) -> subprocess.Popen[bytes]:
    data = tmp / "agent"
    data.mkdir()
    (data / "vehicle-state.json").write_bytes(encode(VehicleState()))  # parked
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUTO_")}
    env["MUTO_AGENT_TOKEN"] = token
    args = [*MUTO, "agent", "run", "--vehicle-id", "car-1", "--cloud-url", server.url,
            "--data-dir", str(data), "--runtime", "simulated", "--trust", str(trust),
            "--poll-s", "1"]  # fmt: skip
    with (tmp / "agent.log").open("ab") as log:
        return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)


@pytest.mark.parametrize("broken_b", [False, True], ids=["a", "a+broken-b"])
def test_a_vehicle_needing_two_signatures_converges_once_the_second_is_added(
    tmp_path: Path, cloud: tuple[ApiServer, str, list[Signer]], broken_b: bool
) -> None:
    server, secret, (a, b) = cloud
    blob = b"the stack's one file"
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    artifact = Artifact(
        type=ArtifactType.FILE, ref=f"artifacts/{digest}", digest=digest, size=len(blob)
    )
    release = stack_release("nav", "1.0.0", [artifact], health=HealthModel(readiness_timeout_sec=5))
    with server.client(secret) as op:
        assert op.put(f"/artifacts/{digest}", content=blob).status_code == 201
        registered = sign_release(release, [a])
        if broken_b:  # stored as pushed (A's alone meets the cloud's threshold)
            bad = flip_signature(sign_release(release, [b])).signatures
            registered = msgspec.structs.replace(
                registered, signatures=[*registered.signatures, *bad]
            )
        assert op.post("/releases", json=to_builtins(registered)).status_code == 201
        assert op.post("/vehicles", json=vehicle_body("car-1")).status_code == 201
        issued = op.post("/tokens", json={"role": "vehicle", "vehicleId": "car-1"})
        control_plane = (server.data_dir / "keys" / "control-plane.pub").read_text()
        trust = tmp_path / "trust.json"
        needs_both = KeySet(keys=[a.public_pem, b.public_pem], threshold=2)
        config = TrustConfig(
            release_keys=needs_both, control_plane_keys=KeySet(keys=[control_plane])
        )
        trust.write_bytes(encode(config))
        agent = agent_run(tmp_path, server, issued.json()["data"]["token"], trust)
        try:
            assign = {
                "target": {"type": "vehicle", "vehicleId": "car-1"},
                "stack": {"name": "nav", "version": "1.0.0"},
            }
            assigned = op.post("/desired-states", json=assign).json()["data"]
            revision = assigned["desiredStateRevision"]

            def vehicle(status: str) -> Any:
                seen = op.get("/vehicles/car-1").json()["data"]
                now = (seen["desiredRevision"], seen["lastStatus"])
                return seen if now == (revision, status) else None

            rejected = eventually(lambda: vehicle("rejected"), "car-1 rejects the release", WAIT_S)
            assert rejected["lastReasonCodes"] == ["VERIFY_SIGNATURE_FAILED"]
            assert rejected["runningRelease"] is None

            signed_by_b = tmp_path / "release.b.signed.json"
            signed_by_b.write_bytes(encode(sign_release(release, [b])))
            env = {k: v for k, v in os.environ.items() if not k.startswith("MUTO_")}
            pushed = subprocess.run(
                [*MUTO, "releases", "push", str(signed_by_b), "--url", server.url, "-o", "json"],
                capture_output=True,
                text=True,
                timeout=120,
                env={**env, "MUTO_TOKEN": secret},
            )
            assert pushed.returncode == 0, pushed.stderr
            assert f"added the signature of key {b.keyid}" in pushed.stderr

            converged = eventually(lambda: vehicle("converged"), "car-1 converges", WAIT_S)
            assert converged["runningRelease"] == release.key
            assert converged["desiredRevision"] == revision  # the same assignment
        finally:
            agent.send_signal(signal.SIGTERM)
            assert agent.wait(timeout=60) == 0, (tmp_path / "agent.log").read_text()[-3000:]
        with Journal.read_only(tmp_path / "agent") as journal:
            state = journal.state
        assert state.running_key == release.key
        audit = op.get("/audit", params={"vehicleId": "car-1", "limit": 1000}).json()["data"]
        reports = [
            (e["data"]["report"]["desiredStateRevision"], e["data"]["report"]["status"])
            for e in audit
            if e["eventType"] == "Vehicle.ReconcileReported"
        ]
        assert reports[0] == (revision, "rejected")
        assert reports[-1] == (revision, "converged")
