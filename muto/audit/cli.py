"""`muto audit replay | explain | export | verify`: compliance questions answered from the
stored events alone. Every command only reads the event log (and `verify` the chain)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from muto.audit.source import AuditError, entries, open_event_log, parse_instant
from muto.cloud.settings import Settings

Action = Callable[[argparse.Namespace], int]


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env(
        data_dir=Path(args.data_dir) if args.data_dir else None,
        database_url=args.database_url,
    )
    if settings.is_memory:
        raise AuditError("an in-memory control plane keeps no log to audit")
    return settings


def _guarded(action: Action) -> Action:
    """An audit that cannot run says why and exits 2 (1 is kept for a broken chain)."""

    def run(args: argparse.Namespace) -> int:
        try:
            return action(args)
        except AuditError as exc:
            print(f"muto audit: {exc}", file=sys.stderr)
            return 2

    return run


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


# -- replay ---------------------------------------------------------------------------


def replay(args: argparse.Namespace) -> int:
    from muto.audit.replay import replay as rebuild
    from muto.audit.source import position_at

    settings = _settings(args)
    until: int | None = args.position
    if args.until is not None:
        instant = parse_instant(args.until)
        log = open_event_log(settings.events_url)
        try:
            until = position_at(log, instant)
        finally:
            log.close()
    done = rebuild(settings.events_url, Path(args.out), until)
    print(f"replayed {done.events} events, views as of position {done.position}, into {done.out}")
    for name, count in sorted(done.tables.items()):
        print(f"  {name}: {count} rows")
    return 0


# -- explain --------------------------------------------------------------------------


def explain(args: argparse.Namespace) -> int:
    from muto.audit import story
    from muto.audit.render import pairs, standing_rows, story_table, told_rows

    settings = _settings(args)
    if args.at is not None and args.vehicle is None:
        raise AuditError("--at goes with --vehicle")
    at = None if args.at is None else parse_instant(args.at)
    if args.vehicle is not None:
        wanted = story.wanted_for_vehicle(args.vehicle)
    else:
        wanted = story.wanted_for_rollout(args.rollout)
    log = open_event_log(settings.events_url)
    try:
        found = list(entries(log, keep=wanted))
    finally:
        log.close()
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


def export(args: argparse.Namespace) -> int:
    from muto.audit.export import export_lines

    settings = _settings(args)
    since = parse_instant(args.since) if args.since else None
    until = parse_instant(args.until) if args.until else None
    log = open_event_log(settings.events_url)
    try:
        lines = export_lines(log, since, until)
        if args.out:
            with Path(args.out).open("wb") as out:
                out.writelines(lines)
        else:
            for line in lines:
                sys.stdout.write(line.decode())
    finally:
        log.close()
    return 0


# -- verify ---------------------------------------------------------------------------


def _anchor(text: str) -> tuple[int, str]:
    position, _, digest = text.partition(":")
    if not position.isdigit() or len(digest) != 64:
        raise argparse.ArgumentTypeError("expected POSITION:SHA256HEX (64 hex digits)")
    return int(position), digest


def verify(args: argparse.Namespace) -> int:
    from muto.audit.verify import verify as check

    settings = _settings(args)
    found = check(settings.events_url, settings.views_url, dict(args.anchor or ()))
    if args.json:
        _print_json(found.to_json())
    elif found.intact:
        print(f"intact: {found.checked} events chained, head position {found.head_position}")
        print(f"head hash {found.head_hash}")
        if found.anchors_checked:
            print(f"anchors matched at positions {found.anchors_checked}")
        print("record the head hash outside this database to detect a rewrite of both tables")
    else:
        print(f"BROKEN at position {found.bad_position}: {found.reason}")
        print(f"intact before it: {found.checked} events, up to position {found.head_position}")
        print(f"last good hash {found.head_hash}")
    return 0 if found.intact else 1


# -- parser ---------------------------------------------------------------------------


def register(sub: Any) -> None:
    from muto.cloud.cli import store_arguments

    audit = sub.add_parser("audit", help="replay, explain, export and verify the event log")
    actions = audit.add_subparsers(dest="action", required=True)

    common = store_arguments

    p = actions.add_parser("replay", help="rebuild every view as it stood at a past point")
    common(p)
    when = p.add_mutually_exclusive_group()
    when.add_argument("--until", metavar="TIME", help="ISO 8601; UTC when no offset")
    when.add_argument("--position", type=int, metavar="N", help="the last log position")
    p.add_argument("--out", required=True, metavar="FILE", help="a new SQLite file")
    p.set_defaults(func=_guarded(replay))

    p = actions.add_parser("explain", help="the story of one vehicle or one rollout")
    common(p)
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--vehicle", metavar="ID")
    who.add_argument("--rollout", metavar="ID")
    p.add_argument("--at", metavar="TIME", help="with --vehicle: what it was told then, and why")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_guarded(explain))

    p = actions.add_parser("export", help="stream events as JSON lines")
    common(p)
    p.add_argument("--from", dest="since", metavar="TIME")
    p.add_argument("--until", metavar="TIME")
    p.add_argument("--format", choices=["jsonl"], default="jsonl")
    p.add_argument("--out", metavar="FILE", help="default: standard output")
    p.set_defaults(func=_guarded(export))

    p = actions.add_parser("verify", help="check the hash chain against the event log")
    common(p)
    p.add_argument(
        "--anchor",
        type=_anchor,
        action="append",
        metavar="POSITION:HASH",
        help="a head hash recorded elsewhere earlier (repeatable)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_guarded(verify))

    # The one audit verb that needs no database: it asks a running control plane.
    from muto.fleetctl.audit import register_timeline

    register_timeline(actions)
