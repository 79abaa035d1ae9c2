"""`muto audit replay | explain | export | verify`: compliance questions answered from the
stored events alone. Every command only reads: the event log itself, or a control plane's
API. Which one is the composer's choice (muto/fleetctl/audit.py): it passes a `Backend`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from muto.audit.source import AuditError, entries, parse_instant
from muto.audit.verify import Finding
from muto.domain.wire import id_refusal
from muto.projections.source import EventSource

Action = Callable[[argparse.Namespace], int]


class Backend(Protocol):
    """Where the audit reads from."""

    def log(self, vehicle: str | None = None, rollout: str | None = None) -> EventSource:
        """The event log. `vehicle` / `rollout`: a hint that only that story's records
        are read (a source may serve fewer records; the reader filters anyway)."""
        ...

    def verify(self, anchors: Mapping[int, str]) -> Finding:
        """The hash chain checked against the log."""
        ...

    def close(self) -> None: ...


Open = Callable[[argparse.Namespace], Backend]


def _guarded(action: Callable[[argparse.Namespace, Backend], int], open_: Open) -> Action:
    """An audit that cannot run says why and exits 2 (1 is kept for a broken chain)."""

    def run(args: argparse.Namespace) -> int:
        try:
            backend = open_(args)
            try:
                return action(args, backend)
            finally:
                backend.close()
        except AuditError as exc:
            print(f"muto audit: {exc}", file=sys.stderr)
            return 2

    return run


def write_lines(lines: Iterable[str]) -> None:
    """Lines to stdout, a write each: when the reader leaves (`| head`) the next write
    raises BrokenPipeError, which muto.cli ends with 141 as for every muto command. One
    write larger than the pipe holds would not: the rest of a partial write is dropped
    without an error (io.TextIOWrapper), and the command would exit 0."""
    for line in lines:
        sys.stdout.write(line)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


# -- replay ---------------------------------------------------------------------------


def replay(args: argparse.Namespace, backend: Backend) -> int:
    from muto.audit.replay import replay as rebuild
    from muto.audit.source import position_at
    from muto.projections.collector import settle_collector

    until: int | None = args.position
    log = backend.log()
    if args.until is not None:
        until = position_at(log, parse_instant(args.until))
    settle_collector()  # the rebuild's batches die young, not in full collections
    done = rebuild(log, Path(args.out), until)
    print(f"replayed {done.events} events, views as of position {done.position}, into {done.out}")
    for name, count in sorted(done.tables.items()):
        print(f"  {name}: {count} rows")
    return 0


def _id(kind: str) -> Callable[[str], str]:
    """An id flag: one the identifier rule forbids names nothing, so no story (exit 2)."""

    def parse(text: str) -> str:
        refusal = id_refusal(kind, text)
        if refusal is not None:
            raise argparse.ArgumentTypeError(refusal)
        return text

    return parse


def _position(text: str) -> int:
    """A log position: 0 (before the first event) or later."""
    try:
        found = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a log position (0 or more), not {text!r}"
        ) from None
    if found < 0:
        raise argparse.ArgumentTypeError(f"a log position is 0 or more, not {found}")
    return found


# -- explain --------------------------------------------------------------------------


def explain(args: argparse.Namespace, backend: Backend) -> int:
    from muto.audit import story
    from muto.audit.render import pairs, standing_rows, story_table, told_rows

    if args.at is not None and args.vehicle is None:
        raise AuditError("--at goes with --vehicle")
    at = None if args.at is None else parse_instant(args.at)
    if args.vehicle is not None:
        wanted = story.wanted_for_vehicle(args.vehicle)
    else:
        wanted = story.wanted_for_rollout(args.rollout)
    found = list(entries(backend.log(args.vehicle, args.rollout), keep=wanted))
    if at is not None:
        told = story.told_at(found, args.vehicle, at)
        if args.json:
            _print_json(told.to_json())
        else:
            print(pairs(told_rows(told)))
        return 0
    if args.vehicle is not None:
        chosen, what = story.vehicle_story(found, args.vehicle), f"vehicle {args.vehicle}"
    else:
        chosen, what = story.rollout_story(found, args.rollout), f"rollout {args.rollout}"
    if not chosen:
        raise AuditError(f"the log holds no events for {what}")
    where = None if args.vehicle is not None else story.standing(found, args.rollout)
    if args.json:
        _print_json([e.to_json() for e in chosen])
    else:
        print(story_table(chosen))
        if where is not None:
            print()
            print(pairs(standing_rows(where)))
    return 0


# -- export ---------------------------------------------------------------------------


def export(args: argparse.Namespace, backend: Backend) -> int:
    from muto.audit.export import export_lines, write_atomically

    since = parse_instant(args.since) if args.since else None
    until = parse_instant(args.until) if args.until else None
    lines = export_lines(backend.log(), since, until)
    if args.out:
        write_atomically(Path(args.out), lines)
    else:
        write_lines(line.decode() for line in lines)
    return 0


# -- verify ---------------------------------------------------------------------------


def _anchor(text: str) -> tuple[int, str]:
    from muto.audit.verify import parse_anchor

    found = parse_anchor(text)
    if found is None:
        raise argparse.ArgumentTypeError("expected POSITION:SHA256HEX (64 hex digits)")
    return found


def verify(args: argparse.Namespace, backend: Backend) -> int:
    found = backend.verify(dict(args.anchor or ()))
    if args.json:
        _print_json(found.to_json())
    elif found.intact:
        print(f"intact: {found.checked} events chained, head position {found.head_position}")
        print(f"head hash {found.head_hash}")
        if found.anchors_checked:
            print(f"anchors matched at positions {found.anchors_checked}")
        print("record the head hash outside this database to detect a rewrite of both tables")
        if found.unchained:
            print(
                f"{found.unchained} events logged after position {found.head_position} are "
                "not chained yet: a running control plane chains them within a second; "
                "verify again to cover them"
            )
    else:
        print(f"BROKEN at position {found.bad_position}: {found.reason}")
        print(f"intact before it: {found.checked} events, up to position {found.head_position}")
        print(f"last good hash {found.head_hash}")
    return 0 if found.intact else 1


# -- parser ---------------------------------------------------------------------------


def register(
    sub: Any,
    place: Callable[[argparse.ArgumentParser], None],
    open_: Open,
    wrap: Callable[[Action], Action] = lambda action: action,
) -> Any:
    """The `audit` group. `place` adds the flags that say where to read, `open_` turns
    them into a Backend, `wrap` reports the composer's own failures. Returns the group's
    subparsers, for the composer's own verbs."""
    audit = sub.add_parser("audit", help="replay, explain, export and verify the event log")
    actions = audit.add_subparsers(dest="action", required=True)

    def verb(
        name: str,
        summary: str,
        action: Callable[[argparse.Namespace, Backend], int],
        *examples: str,
    ) -> Any:
        p = actions.add_parser(
            name,
            help=summary,
            description=summary,
            epilog="examples:\n" + "\n".join(f"  {e}" for e in examples),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        place(p)
        p.set_defaults(func=wrap(_guarded(action, open_)))
        return p

    p = verb(
        "replay",
        "rebuild every view as it stood at a past point",
        replay,
        "muto audit replay --data-dir data/cloud --position 40 --out at-40.db",
        "muto audit replay --api --until 2026-03-03T14:02:00Z --out then.db",
    )
    when = p.add_mutually_exclusive_group()
    when.add_argument("--until", metavar="TIME", help="ISO 8601 with its offset")
    when.add_argument("--position", type=_position, metavar="N", help="the last log position")
    p.add_argument("--out", required=True, metavar="FILE", help="a new SQLite file")

    p = verb(
        "explain",
        "the story of one vehicle or one rollout",
        explain,
        "muto audit explain --data-dir data/cloud --vehicle car-1 --at 2026-03-03T14:02:00Z",
        "muto audit explain --api --rollout ro-1",
    )
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--vehicle", type=_id("vehicle"), metavar="ID")
    who.add_argument("--rollout", type=_id("rollout"), metavar="ID")
    p.add_argument("--at", metavar="TIME", help="with --vehicle: what it was told then, and why")
    p.add_argument("--json", action="store_true")

    p = verb(
        "export",
        "stream events as JSON lines",
        export,
        "muto audit export --data-dir data/cloud --out events.jsonl",
        "muto audit export --api --from 2026-03-01T00:00:00Z",
    )
    p.add_argument("--from", dest="since", metavar="TIME", help="ISO 8601 with its offset")
    p.add_argument("--until", metavar="TIME", help="ISO 8601 with its offset")
    p.add_argument("--format", choices=["jsonl"], default="jsonl")
    p.add_argument("--out", metavar="FILE", help="default: standard output")

    p = verb(
        "verify",
        "check the hash chain against the event log",
        verify,
        "muto audit verify --data-dir data/cloud",
        "muto audit verify --api --anchor 59:<the head hash recorded earlier>",
    )
    p.add_argument(
        "--anchor",
        type=_anchor,
        action="append",
        metavar="POSITION:HASH",
        help="a head hash recorded elsewhere earlier (repeatable)",
    )
    p.add_argument("--json", action="store_true")
    return actions
