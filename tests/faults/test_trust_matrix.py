"""Scenario 7: the signature and digest matrix of the trust issue, end to end: the real
cloud process (which checks release signatures itself, --release-key), a tampering
transport between it and an agent with the real trust store file and the real artifact
cache, and a real artifact server. tests/unit/test_trust_attacks.py has the full table
against verify_bundle; here each kind of attack goes through everything.

Each bundle row: the cloud assigns a genuine new revision; the transport alters the
bundle on its way (as an attacker, or a cloud that signs something wrong); the agent
rejects it with the row's reason code, its trust store file does not change by one
byte, the running release does not change, and the cloud records the `rejected` report.
Each digest row: a genuine desired state for a release whose artifact is served wrong:
`failed` with ARTIFACT_DOWNLOAD_FAILED, nothing of it left in the cache.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from muto.agent.agent import Agent
from muto.agent.journal.events import ArtifactFailed, DesiredRejected
from muto.domain.desired import DesiredStateBundle, DesiredStateDocument, Envelope
from muto.domain.release import StackRelease
from muto.domain.wire import canonical, decode, to_builtins
from muto.sim.services import CloudProcess, prepare_cloud
from muto.trust import Signer, sign_release
from muto.trust.dsse import DESIRED_STATE_TYPE, MAX_PAYLOAD_CHARS, sign_envelope
from tests.conftest import Mosquitto
from tests.faults.rig import Between, real_parts_agent
from tests.support.artifact_server import ArtifactServer, Faults
from tests.support.operator import Operator
from tests.support.releases import archive, signed, stack_release
from tests.support.trust_kit import flip_signature, unsigned

pytestmark = pytest.mark.mqtt
replace = msgspec.structs.replace
Mutation = Callable[[DesiredStateBundle], DesiredStateBundle]


@dataclass
class Keys:
    control: Signer  # the cloud's own key, read from its data dir
    release: Signer
    replayed: DesiredStateBundle | None = None  # the first genuine bundle, kept
    other_release: Envelope | None = None  # another genuinely signed release


def document(bundle: DesiredStateBundle) -> DesiredStateDocument:
    return decode(base64.b64decode(bundle.desired_state.payload), DesiredStateDocument)


def resigned(keys: Keys, **changes: Any) -> Mutation:
    """The cloud's key signs an altered document (a compromised or buggy cloud)."""

    def mutate(bundle: DesiredStateBundle) -> DesiredStateBundle:
        altered = canonical(replace(document(bundle), **changes))
        envelope = sign_envelope(altered, DESIRED_STATE_TYPE, [keys.control])
        return replace(bundle, desired_state=envelope)

    return mutate


def byte_changed(bundle: DesiredStateBundle) -> DesiredStateBundle:
    payload = bytearray(base64.b64decode(bundle.desired_state.payload))
    payload[payload.index(b'"sequence":') + 11] ^= 0x01  # another sequence, same signature
    changed = replace(bundle.desired_state, payload=base64.b64encode(payload).decode())
    return replace(bundle, desired_state=changed)


def bundle_rows(keys: Keys) -> list[tuple[str, Mutation, str]]:
    past = datetime.now(UTC) - timedelta(minutes=1)
    ds, rel = "desired_state", "release"
    return [
        ("unsigned desired state", lambda b: replace(b, desired_state=unsigned(b.desired_state)),
         "VERIFY_SIGNATURE_FAILED"),
        ("unsigned release", lambda b: replace(b, release=unsigned(b.release)),
         "VERIFY_SIGNATURE_FAILED"),
        ("corrupted desired-state signature",
         lambda b: replace(b, **{ds: flip_signature(b.desired_state)}), "VERIFY_SIGNATURE_FAILED"),
        ("corrupted release signature", lambda b: replace(b, **{rel: flip_signature(b.release)}),
         "VERIFY_SIGNATURE_FAILED"),
        ("desired state by an unknown key",
         lambda b: replace(b, desired_state=sign_envelope(base64.b64decode(b.desired_state.payload),
                                                          DESIRED_STATE_TYPE, [Signer.generate()])),
         "VERIFY_SIGNATURE_FAILED"),
        ("release by the control-plane key",
         lambda b: replace(b, release=sign_release(decode(base64.b64decode(b.release.payload),
                                                          StackRelease), [keys.control])),
         "VERIFY_SIGNATURE_FAILED"),
        ("a payload byte changed", byte_changed, "VERIFY_SIGNATURE_FAILED"),
        ("another genuinely signed release in the bundle",
         lambda b: replace(b, release=keys.other_release), "VERIFY_SIGNATURE_FAILED"),
        ("endless payload", lambda b: replace(b, desired_state=replace(
            b.desired_state, payload="A" * (MAX_PAYLOAD_CHARS + 4))), "VERIFY_SIGNATURE_FAILED"),
        ("replay of an older document", lambda b: keys.replayed or b, "STALE_REVISION"),
        ("same sequence, other content (cloud key)",
         resigned(keys, sequence=2, revision="dsr_forged"), "STALE_REVISION"),
        ("another vehicle's document (cloud key)", resigned(keys, vehicle_id="car-other"),
         "WRONG_VEHICLE"),
        ("expired (cloud key)", resigned(keys, expires_at=past), "DESIRED_STATE_EXPIRED"),
    ]  # fmt: skip


def tampering(mutate: Mutation) -> Callable[..., Any]:
    async def tamper(request: httpx.Request, forward: Any) -> httpx.Response:
        response: httpx.Response = await forward(request)
        if request.url.path != "/desired-states/latest" or response.status_code != 200:
            return response
        body = msgspec.json.decode(response.content)
        bundle = mutate(decode(msgspec.json.encode(body["data"]), DesiredStateBundle))
        body["data"] = to_builtins(bundle)
        headers = {"etag": response.headers["etag"], "content-type": "application/json"}
        return httpx.Response(200, headers=headers, content=msgspec.json.encode(body))

    return tamper


def served_release(
    server: ArtifactServer, tmp: Path, version: str, digest_of: str = ""
) -> StackRelease:
    artifact, _ = archive(tmp, "nav", version, {"v": version}, server=server)
    if digest_of:  # declare the digest of other bytes
        artifact = replace(artifact, digest="sha256:" + digest_of * 64)
    return stack_release("nav", version, [artifact])


def last_code(agent: Agent, kind: type[DesiredRejected] | type[ArtifactFailed]) -> str:
    found = [r.event.code for r in agent.journal.records() if isinstance(r.event, kind)]
    return str(found[-1])


def last_under(agent: Agent, kind: type[DesiredRejected]) -> str | None:
    """The revision the last rejection was journaled (and so reported) under."""
    return [r.event for r in agent.journal.records() if isinstance(r.event, kind)][-1].revision


def test_the_matrix_through_the_real_cloud_and_cache(tmp_path: Path, mosquitto: Mosquitto) -> None:
    operator_token, trust, release_signer, release_pub = prepare_cloud(tmp_path)
    cloud = CloudProcess(tmp_path / "cloud", mosquitto.url, release_pub)
    keys = Keys(Signer.load(tmp_path / "cloud/keys/control-plane.key"), release_signer)
    rows: list[str] = []

    async def scenario() -> None:
        await cloud.start()
        op = Operator(cloud.url, operator_token)
        with ArtifactServer() as server:
            good, newer = (served_release(server, tmp_path, v) for v in ("1.0.0", "2.0.0"))
            for release in (good, newer):
                await op.publish(release, release_signer)
            # The cloud itself refuses a release signed by a key it does not trust.
            refused = await op.publish(served_release(server, tmp_path, "6.6.6"),
                                       Signer.generate(), status=422)  # fmt: skip
            assert refused == "VERIFY_SIGNATURE_FAILED"
            rows.append("cloud refuses a release by an unknown key: 422")
            keys.other_release = signed(good, release_signer).envelope
            token = await op.vehicle("car-t")
            between = Between()
            agent, http = real_parts_agent(tmp_path / "car-t", "car-t", cloud.url, token, trust,
                                           between=between)  # fmt: skip
            await agent.start(loop=False)
            replayed_revision = await op.desire("car-t", good)
            assert (await agent.reconcile()).kind == "converged"
            captured = await (await between.forward(httpx.Request(
                "GET", f"{cloud.url}/desired-states/latest?vehicleId=car-t",
                headers={"Authorization": f"Bearer {token}"}))).aread()  # fmt: skip
            keys.replayed = decode(msgspec.json.encode(msgspec.json.decode(captured)["data"]),
                                   DesiredStateBundle)  # fmt: skip
            await op.desire("car-t", newer)
            assert (await agent.reconcile()).kind == "converged"
            trust_file = tmp_path / "car-t" / "trust.json"
            for name, mutate, code in bundle_rows(keys):
                before = trust_file.read_bytes()
                revision = await op.desire("car-t", newer)
                between.tamper = tampering(mutate)
                verdict = await agent.reconcile()
                between.tamper = None
                assert last_code(agent, DesiredRejected) == code, name
                assert trust_file.read_bytes() == before, name
                assert agent.journal.state.running_key == newer.key, (name, verdict)
                assert await agent.courier.drain()
                # Reported under the revision its signed document names when that is this
                # vehicle's; else under the one the cloud sent (unsigned: only as news).
                under = {
                    "replay of an older document": replayed_revision,
                    "same sequence, other content (cloud key)": "dsr_forged",
                    "another vehicle's document (cloud key)": None,
                }.get(name, revision)
                assert last_under(agent, DesiredRejected) == under, name
                assert (await op.reported("car-t", under))[-1:] == [("rejected", [code])], name
                rows.append(f"{name}: {code}")
            for n, (name, faults, digest_of) in enumerate([
                ("artifact bytes swapped", Faults(wrong_bytes=True), ""),
                ("artifact longer than declared", Faults(endless=True), ""),
                ("declared digest of other bytes", Faults(), "e"),
            ]):  # fmt: skip
                bad = served_release(server, tmp_path, f"3.0.{n}", digest_of)
                await op.publish(bad, release_signer)
                await op.desire("car-t", bad)
                server.faults = faults
                verdict = await agent.reconcile()
                server.faults = Faults()
                assert (verdict.kind, last_code(agent, ArtifactFailed)) == (
                    "failed", "ARTIFACT_DOWNLOAD_FAILED"), name  # fmt: skip
                assert not agent.parts.artifacts.present([bad.artifacts[0].digest]), name
                assert agent.journal.state.running_key == newer.key, name
                rows.append(f"{name}: ARTIFACT_DOWNLOAD_FAILED")
            await agent.stop()
            await http.aclose()
            await between.aclose()
        await op.http.aclose()

    try:
        asyncio.run(scenario())
    finally:
        asyncio.run(cloud.stop())
    print(f"\nscenario 7: {len(rows)} rows end to end: " + "; ".join(rows))
    assert len(rows) == 17
