"""The cloud under fault: load that remembers what was acknowledged, and the checks run
after a restart (no event lost or duplicated, views equal a full rebuild)."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from muto.cloud.bootstrap import ControlPlane
from muto.cloud.settings import Settings
from tests.support.api_server import ApiServer, reconcile_body, unique, vehicle_body
from tests.support.spine import view_rows


@dataclass
class Load:
    """Threads that register vehicles and report for them until the server goes away.
    `sent` is every request that may have reached the server, `acknowledged` every one
    it answered with success: after a crash the first may be resent, the second must be
    stored."""

    server: ApiServer
    secret: str
    batch: str = field(default_factory=lambda: unique("batch"))
    threads: int = 4
    sent: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    acknowledged: list[str] = field(default_factory=list)  # vehicle ids and report ids
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self, round_: int) -> None:
        self._workers = [
            threading.Thread(target=self._write, args=(f"{round_}-{n}",), daemon=True)
            for n in range(self.threads)
        ]
        for worker in self._workers:
            worker.start()

    def join(self) -> None:
        for worker in self._workers:
            worker.join(timeout=60)
            assert not worker.is_alive()

    def count(self) -> int:
        with self._lock:
            return len(self.acknowledged)

    def _post(self, http: httpx.Client, path: str, body: dict[str, Any], key: str) -> bool:
        with self._lock:
            self.sent.append((path, body))
        response = http.post(path, json=body)
        if response.status_code not in (200, 201):
            return False
        with self._lock:
            self.acknowledged.append(key)
        return True

    def _write(self, name: str) -> None:
        with self.server.client(self.secret) as http:
            for i in range(100_000):
                vehicle_id = f"{self.batch}-{name}-{i:05d}"
                report = reconcile_body(vehicle_id, unique("rep"))
                try:
                    body = vehicle_body(vehicle_id, batch=self.batch)
                    if not self._post(http, "/vehicles", body, vehicle_id):
                        return
                    if not self._post(http, "/reports/reconcile", report, report["reportId"]):
                        return
                except httpx.TransportError:
                    return  # the server is gone

    def resend(self, http: httpx.Client) -> None:
        """What an agent does after a crash: send again what was not acknowledged (here:
        everything, acknowledged or not); the cloud must store each once."""
        for path, body in self.sent:
            response = http.post(path, json=body)
            assert response.status_code in (200, 201), response.text


def audit(http: httpx.Client) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    after = 0
    while True:
        page = http.get("/audit", params={"limit": 1000, "after": after})
        assert page.status_code == 200, page.text
        found = page.json()["data"]
        if not found:
            return entries
        entries += found
        after = found[-1]["position"]


def duplicates(values: list[str]) -> list[str]:
    return [value for value, n in Counter(values).items() if n > 1]


def views_equal_a_rebuild(settings: Settings) -> None:
    """With the server stopped: every view equals a replay of the log from position 0,
    and every projection has reached the end of the log."""
    plane = ControlPlane.open(settings)
    try:
        live = view_rows(plane.views)
        assert plane.projector.lag() == 0
        for name in plane.projector.projections:
            plane.projector.rebuild(name)
        assert view_rows(plane.views) == live
    finally:
        plane.close()
