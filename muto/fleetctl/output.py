"""What a verb prints: a rich table for people, or the API's data unchanged as JSON or
YAML for scripts (`-o json|yaml`)."""

from __future__ import annotations

import argparse
import functools
import json
import select
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import yaml
from rich.console import Console, RenderableType
from rich.table import Table

from muto.audit.cli import write_lines
from muto.fleetctl.connection import FleetError, connection_arguments

Action = Callable[[argparse.Namespace], int]


def console() -> Console:
    """A terminal's width; through a pipe (no terminal) wide enough not to fold digests."""
    found = Console()
    return found if found.is_terminal else Console(width=250)


def common(p: argparse.ArgumentParser, *, output: bool = True) -> None:
    connection_arguments(p)
    if output:
        p.add_argument(
            "-o",
            "--output",
            choices=["table", "json", "yaml"],
            default="table",
            help="table for people; json or yaml: the API's data unchanged",
        )


def verb(
    actions: Any, name: str, summary: str, example: str, func: Action
) -> argparse.ArgumentParser:
    """A subcommand whose --help ends with an example."""
    p: argparse.ArgumentParser = actions.add_parser(
        name,
        help=summary,
        description=summary,
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=reporting(func))
    return p


def reporting(func: Action) -> Action:
    """One line on stderr and the documented exit code for a FleetError; no traceback
    (nor for Ctrl-C: 130)."""

    @functools.wraps(func)
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except FleetError as exc:
            print(exc.line(), file=sys.stderr)
            return exc.exit_code
        except KeyboardInterrupt:  # Ctrl-C on a watch: stop quietly, as the shell expects
            return 130

    return run


def emit(args: argparse.Namespace, data: Any, table: Callable[[Any], RenderableType]) -> None:
    fmt = getattr(args, "output", "table")
    if fmt == "json":
        text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    elif fmt == "yaml":
        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    else:
        out = console()
        with out.capture() as captured:  # laid out for stdout (a terminal or not)
            out.print(table(data))
        text = captured.get()
    # A line at a time, as the audit writes (rich's own printing made a broken pipe exit 1).
    write_lines(text.splitlines(keepends=True))


def emit_frame(args: argparse.Namespace, data: Any, table: Callable[[Any], RenderableType]) -> None:
    """One refresh of a watch whose stdout is no terminal (a file, a pipe), written now:
    `-o json` one compact JSON document a line, `-o yaml` one YAML document after `---`,
    a table as `emit` lays it out, then a blank line."""
    fmt = getattr(args, "output", "table")
    if fmt == "json":
        write_lines([json.dumps(data, separators=(",", ":")) + "\n"])
    elif fmt == "yaml":
        write_lines(["---\n"])
        emit(args, data, table)
    else:
        emit(args, data, table)
        write_lines(["\n"])
    sys.stdout.flush()  # block-buffered off a terminal: shown now, and a gone reader raises


def stdout_closed() -> bool:
    """Whether stdout is a pipe or socket its reader has closed (`| head` done): a watch
    that prints only on a change would otherwise learn it at the next change, hours
    later. poll() says POLLERR for a pipe with no reader, POLLHUP for a socket."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        events = poller.poll(0)
    except (AttributeError, OSError, ValueError):  # no poll(), or no stdout fd
        return False
    return any(mask & (select.POLLERR | select.POLLHUP) for _, mask in events)


def grid(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    t = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for column in columns:
        t.add_column(column, overflow="fold")
    for row in rows:
        t.add_row(*(cell(v) for v in row))
    return t


def fields(title: str, pairs: Iterable[tuple[str, Any]]) -> Table:
    """A two-column key/value table for one resource."""
    t = Table(title=title, title_justify="left", show_header=False, show_edge=False, pad_edge=False)
    t.add_column(style="bold")
    t.add_column(overflow="fold")
    for key, value in pairs:
        t.add_row(key, cell(value))
    return t


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={cell(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return ", ".join(cell(v) for v in value) or "-"
    return str(value)
