"""`muto audit timeline | head -1` ends as every muto command does when its reader
leaves (docs/cli.md: exit 141, by muto.cli on BrokenPipeError), also when its output is
larger than a pipe holds: written in one piece, the part that did not fit was dropped
without an error and it exited 0 (or 1: rich's own broken-pipe exit, for the table)."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import io
import json
import os
import termios
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import muto.fleetctl.audit as audit_cli
from muto.cli import build_parser

ENTRIES = [
    {
        "position": i,
        "at": f"2026-12-06T00:{i // 60 % 60:02d}:{i % 60:02d}+00:00",
        "eventType": "Vehicle.ReconcileReported",
        "vehicleId": "car-1",
        "rolloutId": None,
        "actor": "vehicle:car-1",
        "data": {"status": "converged", "revision": f"r{i}"},
    }
    for i in range(1, 1501)  # well over a pipe's 64 KiB in every format
]


class Api:
    def __enter__(self) -> Api:
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def call(self, method: str, path: str, params: dict[str, Any]) -> dict[str, Any]:
        assert (method, path) == ("GET", "/audit")
        return {"data": ENTRIES, "metadata": {"nextAfter": None}}


class Connection:
    @staticmethod
    def resolve(_: argparse.Namespace) -> Connection:
        return Connection()

    def client(self) -> Api:
        return Api()


def timeline(*extra: str) -> argparse.Namespace:
    return build_parser("audit").parse_args(["audit", "timeline", *extra])


@contextlib.contextmanager
def pipe_whose_reader_leaves(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """stdout into a pipe whose reader waits until the pipe is full (the writer blocked
    in the middle of its output), takes a few bytes and leaves, as `head -1` does."""
    read_end, write_end = os.pipe()
    out = io.TextIOWrapper(io.FileIO(write_end, "w"), encoding="utf-8")

    def reader() -> None:
        waiting, last = time.monotonic() + 10, -1
        while time.monotonic() < waiting:
            held = int.from_bytes(fcntl.ioctl(read_end, termios.FIONREAD, b"\0" * 4), "little")
            if held >= 60_000 and held == last:
                break
            last = held
            time.sleep(0.05)
        os.read(read_end, 10)
        os.close(read_end)

    leaving = threading.Thread(target=reader)
    leaving.start()
    monkeypatch.setattr("sys.stdout", out)
    try:
        yield
    finally:
        leaving.join()
        with contextlib.suppress(BrokenPipeError):
            out.close()


@pytest.mark.parametrize("output", ["table", "json", "yaml"])
def test_a_reader_that_leaves_is_a_broken_pipe(
    monkeypatch: pytest.MonkeyPatch, output: str
) -> None:
    monkeypatch.setattr(audit_cli, "Connection", Connection)
    args = timeline("-o", output)
    with pipe_whose_reader_leaves(monkeypatch), pytest.raises(BrokenPipeError):
        args.func(args)


def test_the_output_is_what_the_verb_prints(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(audit_cli, "Connection", Connection)
    args = timeline("-o", "json", "--limit", "2")
    assert args.func(args) == 0
    assert json.loads(capsys.readouterr().out) == ENTRIES[:2]
    args = timeline("--limit", "1")
    assert args.func(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["POSITION", "┃"] and "car-1" in lines[2]
