"""Plain-text tables for the terminal: columns padded to their widest cell, the last
column left unpadded so long descriptions wrap naturally."""

from __future__ import annotations

from collections.abc import Sequence

from muto.audit.lines import describe
from muto.audit.source import Entry
from muto.audit.story import Standing, Told

STORY_HEADER = ("POS", "AT", "EVENT", "ACTOR", "CORRELATION", "WHAT")


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    lines = [
        "  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]])
        for row in [header, *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)


def story_row(entry: Entry) -> list[str]:
    return [
        str(entry.position),
        entry.at.isoformat(timespec="seconds"),
        entry.type,
        entry.actor,
        entry.correlation_id,
        describe(entry),
    ]


def story_table(story: Sequence[Entry]) -> str:
    return table(STORY_HEADER, [story_row(e) for e in story])


def pairs(rows: Sequence[tuple[str, str]]) -> str:
    """`key   value` lines, keys padded to the widest."""
    width = max((len(k) for k, _ in rows), default=0)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def one_line(entry: Entry) -> str:
    when = entry.at.isoformat(timespec="seconds")
    return f"#{entry.position} {when} {entry.type} by {entry.actor}: {describe(entry)}"


def told_rows(told: Told) -> list[tuple[str, str]]:
    rows = [("vehicle", told.vehicle_id), ("at", told.at.isoformat())]
    a = told.assignment
    if a is None:
        return [*rows, ("told to run", "nothing: no desired state assigned by then")]
    d = a.data["assignment"]
    via = f", rollout {d['rolloutId']} {d.get('phase') or ''}".rstrip() if d["rolloutId"] else ""
    expired = "  EXPIRED by then" if told.expired else ""
    rows += [
        ("told to run", f"{d['releaseKey'] or 'nothing'} (revision {d['revision']}{via})"),
        ("assigned", f"#{a.position} {a.at.isoformat()} by {a.actor}"),
        ("correlation", a.correlation_id),
        (
            "document",
            f"sequence {a.data['sequence']}, issued {d['issuedAt']}, "
            f"expires {d['expiresAt']}{expired}",
        ),
    ]
    rows += [("because" if i == 0 else "", one_line(e)) for i, e in enumerate(told.because)]
    for label, entry in (("reported", told.reported), ("health", told.health)):
        rows.append((label, "nothing by then" if entry is None else one_line(entry)))
    return rows


def standing_rows(s: Standing) -> list[tuple[str, str]]:
    """Where a rollout stands: why it waits, if it does."""
    paused = " (paused: the deadline clock stands still)" if s.paused else ""
    if s.left_s is not None:
        deadline = f"none while paused ({s.left_s:g} s left of the phase)"
    else:
        deadline = "none (final)" if s.deadline is None else s.deadline.isoformat()
    rows = [("state", f"{s.state}{paused}"), ("deadline", deadline)]
    if not s.outstanding:
        return [*rows, ("outstanding", "none")]
    rows.append(("outstanding", f"{len(s.outstanding)} vehicle(s)"))
    for w in s.outstanding:
        seen = (
            "presence unknown"
            if w.presence is None
            else (f"{w.presence.data['state']} since {w.presence.at.isoformat(timespec='seconds')}")
        )
        heard = "no report" if w.reported is None else f"last: {one_line(w.reported)}"
        rows.append(("", f"{w.vehicle_id} {w.status}, {seen}; {heard}"))
    return rows
