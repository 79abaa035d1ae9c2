"""`muto agent journal list | show | replay | verify | export --data-dir DIR`.

Read-only: safe while the agent runs. Tables for people by default, `--json` for tools.
Times without an offset are read in this machine's local zone. A journal that is missing
or cannot be read is one line on stderr and exit 2; `verify` reports a damaged one as a
problem (exit 1).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from muto.agent.journal import Journal, JournalUnreadable, Record
from muto.agent.journal.integrity import Verification, verify
from muto.agent.journal.state import JournalState
from muto.domain.instants import InstantError, parse_instant

SUMMARY_FIELDS = (
    "sequence", "releaseKey", "targetKey", "failedKey", "code", "codes", "causes",
    "status", "step", "count", "gaveUp", "reportId", "digest", "via", "reason", "etag",
    "version", "threshold", "keyIds", "inForce", "stopped", "accepted",
)  # fmt: skip


def _open(args: argparse.Namespace, fold: bool = True) -> Journal:
    """The journal, read-only. What it shows of one that lost committed records is what
    is left: said on stderr first (`verify` reports it as a problem)."""
    journal = Journal.read_only(Path(args.data_dir), fold=fold)
    missing = journal.lost_tail() if fold else None
    if missing is not None:
        print(f"muto agent journal: warning: {journal.path}: {missing}", file=sys.stderr)
    return journal


Command = Callable[[argparse.Namespace], int]


def _reading(command: Command) -> Command:
    """`command`, with a missing or unreadable journal said in one line (exit 2)."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except FileNotFoundError as exc:
            print(f"muto agent journal: no journal at {exc}", file=sys.stderr)
        except (JournalUnreadable, InstantError) as exc:
            print(f"muto agent journal: {exc}", file=sys.stderr)
        return 2

    return run


def _when(text: str | None) -> datetime | None:
    if text is None:
        return None
    return parse_instant(text, local_if_no_offset=True)


def _builtins(record: Record) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(record.raw)
    return data


def _selected(journal: Journal, args: argparse.Namespace) -> Iterator[Record]:
    since, until = _when(args.since), _when(args.until)
    types = set(args.type or ())
    for record in journal.records():
        if types and type(record.event).__name__ not in types:
            continue
        if (since and record.event.at < since) or (until and record.event.at > until):
            continue
        if args.revision and getattr(record.event, "revision", None) != args.revision:
            continue
        yield record


def summary(record: Record) -> str:
    data = _builtins(record)
    parts = ["open"] if data["type"] == "GatesEvaluated" and not data["codes"] else []
    for key in SUMMARY_FIELDS:
        value = data.get(key)
        if value not in (None, [], ""):
            shown = ",".join(map(str, value)) if isinstance(value, list) else value
            parts.append(f"{key}={shown}")
    return " ".join(parts)


def list_events(args: argparse.Namespace) -> int:
    with _open(args) as journal:
        rows = list(_selected(journal, args))
    if args.limit:
        rows = rows[-args.limit :]
    if args.json:
        for r in rows:
            print(json.dumps({"position": r.position, "event": _builtins(r)}))
        return 0
    print(f"{'POS':>6}  {'AT':<26}  {'TYPE':<18}  {'REVISION':<12}  DETAIL")
    for r in rows:
        revision = getattr(r.event, "revision", None) or "-"
        at = r.event.at.isoformat(timespec="seconds")
        print(
            f"{r.position:>6}  {at:<26}  {type(r.event).__name__:<18}  {revision:<12}  {summary(r)}"
        )
    return 0


def show(args: argparse.Namespace) -> int:
    with _open(args) as journal:
        found = next(journal.records(args.position - 1, args.position), None)
    if found is None:
        print(f"no event at position {args.position}", file=sys.stderr)
        return 1
    body = {"position": found.position, "chain": found.chain, "event": _builtins(found)}
    print(json.dumps(body, indent=None if args.json else 2))
    return 0


def replay(args: argparse.Namespace) -> int:
    position, at = args.position, _when(args.at)
    with _open(args) as journal:
        if at is not None:
            position = max((r.position for r in journal.records() if r.event.at <= at), default=0)
        state = journal.state_at(position if position is not None else journal.last_position())
    if args.json:
        print(msgspec.json.encode(state).decode())
        return 0
    for line in describe(state):
        print(line)
    return 0


def describe(state: JournalState) -> list[str]:
    """What was running at this point and why, in a few lines."""
    running, desired, flight = state.running, state.desired, state.in_flight
    lines = [f"position       {state.position}  ({state.last_at or 'nothing yet'})"]
    if running is not None:
        why = f"{running.cause} under {running.revision or '-'}, event {running.position}"
        lines.append(f"running        {running.key}  since {running.since}  ({why})")
    else:
        lines.append("running        nothing")
    lines.append(f"previous good  {state.previous_known_good() or '-'}")
    if desired is not None:
        lines.append(
            f"desired        {desired.release.key if desired.release else 'nothing'}"
            f"  revision {desired.revision}"
            f"  sequence {desired.sequence}"
        )
    if state.held is not None:
        held = state.held
        lines.append(
            f"held back      revision {held.revision}  sequence {held.sequence}"
            "  (expiry not judged: untrusted clock)"
        )
    if flight is not None:
        lines.append(f"in flight      {flight.step} {flight.release_key}")
    if state.rollback_due is not None:
        lines.append(f"rollback due   {state.rollback_due.failed_key} {state.rollback_due.causes}")
    for key, failure in state.failed.items():
        lines.append(f"failed here    {key}  {failure.status} {','.join(failure.codes)}")
    if state.gates:
        lines.append(f"gates blocking {','.join(state.gates)}")
    if state.pass_failed is not None:
        failed = state.pass_failed
        lines.append(f"passes failing {failed.code} since {failed.at}  ({failed.detail})")
    lines.append(f"outbox         {len(state.outbox)} report(s) not yet delivered")
    config = state.config
    lines.append(
        f"config         heartbeat {config.heartbeat_s}s, telemetry "
        f"{'on' if config.telemetry_enabled else 'off'}, log {config.log_level}"
    )
    return lines


def verify_journal(args: argparse.Namespace) -> int:
    try:
        with _open(args, fold=False) as journal:
            found = verify(journal)
    except JournalUnreadable as exc:  # judging the file is this command's job
        found = Verification(problems=[str(exc)])
    if args.json:
        print(json.dumps({"ok": found.ok, "events": found.events, "snapshots": found.snapshots,
                          "problems": found.problems}))  # fmt: skip
    else:
        verdict = "ok" if found.ok else f"{len(found.problems)} problem(s)"
        print(f"{verdict}: {found.events} events, {found.snapshots} snapshots")
        for problem in found.problems:
            print(f"  {problem}")
    return 0 if found.ok else 1


def export(args: argparse.Namespace) -> int:
    with _open(args) as journal, contextlib.ExitStack() as stack:
        out = stack.enter_context(Path(args.out).open("w")) if args.out else sys.stdout
        for r in journal.records():
            line = {"position": r.position, "chain": r.chain, "event": _builtins(r)}
            out.write(json.dumps(line) + "\n")
    return 0


def register(actions: Any) -> None:
    journal = actions.add_parser("journal", help="inspect the agent's journal (read-only)")
    verbs = journal.add_subparsers(dest="verb", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", required=True)
        p.add_argument("--json", action="store_true", help="machine-readable output")

    p = verbs.add_parser("list", help="events, filtered")
    common(p)
    p.add_argument("--type", action="append", help="event type (repeatable)")
    p.add_argument("--since", help="ISO time")
    p.add_argument("--until", help="ISO time")
    p.add_argument("--revision")
    p.add_argument("--limit", type=int, default=0, help="only the last N")
    p.set_defaults(func=_reading(list_events))

    p = verbs.add_parser("show", help="one event")
    common(p)
    p.add_argument("position", type=int)
    p.set_defaults(func=_reading(show))

    p = verbs.add_parser("replay", help="the derived state at a point")
    common(p)
    point = p.add_mutually_exclusive_group()
    point.add_argument("--at", help="ISO time: the state after the last event at or before it")
    point.add_argument("--position", type=int)
    p.set_defaults(func=_reading(replay))

    p = verbs.add_parser("verify", help="check integrity (exit 1 on problems)")
    common(p)
    p.set_defaults(func=_reading(verify_journal))

    p = verbs.add_parser("export", help="every event as JSON lines")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--out", default=None)
    p.set_defaults(func=_reading(export))
