"""A newer desired state announced during a slow download, with the agent's real parts
(the process runtime, the artifact cache over a local HTTP server that stalls, an SQLite
journal, the agent's own loop): the operator's rollback of the release being downloaded
stops the download at once (its partial kept) and the vehicle stays on what ran, without
ever starting the release that was pulled. On fakes: tests/unit/test_agent_newer_desired.py."""

from __future__ import annotations

import time
from pathlib import Path

from muto.agent.journal import events as ev
from tests.support.artifact_server import ArtifactServer, Faults
from tests.support.real_vehicle import NOW, TOKEN, Vehicle, release, run
from tests.support.waits import until


def test_a_rollback_notified_mid_download_stops_it_and_the_pulled_release_never_starts(
    tmp_path: Path,
) -> None:
    async def scenario(car: Vehicle, server: ArtifactServer) -> None:
        good = release(tmp_path, server, "1.0.0")
        pulled = release(tmp_path, server, "2.0.0", padding=32 * 1024)
        await car.agent.start()
        car.desire(good, 1)
        await car.running(good, "1.0.0")
        # From here the link stalls after 1 KiB of every download, for a minute.
        server.faults = Faults(bearer_token=TOKEN, stall_after=1024, stall_s=60)
        car.desire(pulled, 2)
        await until(lambda: car.agent.phase.value == "caching", "the download", in_thread=False)
        before = car.agent.journal.state.position
        car.cloud.serve(car.signers.bundle(good, 3, issued=NOW))
        notified = time.monotonic()
        car.agent.signals.notify(3)  # as the MQTT link does for desired/notify
        await until(
            lambda: car.agent.idle and car.agent.journal.state.accepted_sequence == 3,
            "the rollback revision, taken at once",
            timeout=10,
            in_thread=False,
        )
        took = time.monotonic() - notified
        assert took < 5, took  # not the minute the stalled download would have taken
        assert [e.release_key for e in car.events(ev.ApplyStarted, before)] == []
        (stopped,) = car.events(ev.PassPreempted, before)
        digest = pulled.artifacts[0].digest
        assert (stopped.stopped, stopped.release_key, stopped.digests) == (
            "download",
            pulled.key,
            [digest],
        )
        assert (stopped.sequence, stopped.accepted) == (3, 2)
        kept = [e for e in car.cache.entries() if e.digest == digest]
        assert kept and not kept[0].complete  # the partial stays
        await car.running(good, "1.0.0 still")
        assert car.runtime.status().release == good.key
        await car.agent.courier.drain()
        assert ("dsr_3", "converged", []) in car.cloud.reconcile_reports()

    run(tmp_path, scenario)
