"""`muto`: one entry point, one subcommand group per part of the system.

Each group lives beside the code it drives and exposes `register(subparsers)`;
this table is the only place that lists them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# group name -> module exposing register(subparsers)
GROUPS: dict[str, str] = {
    "agent": "muto.agent.cli",
    "release": "muto.trust.cli",
    "cloud": "muto.cloud.cli",
    "demo": "muto.sim.demo",
    "sim": "muto.sim.cli",
    "audit": "muto.audit.cli",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser for every group, or for `only` one: a vehicle running `muto agent`
    then never imports the cloud's stack (SQLAlchemy, Starlette: ~27 MB of its RSS)."""
    parser = argparse.ArgumentParser(prog="muto", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")
    for name, module in GROUPS.items():
        if only is None or name == only:
            importlib.import_module(module).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    group = argv[0] if argv and argv[0] in GROUPS else None
    args = build_parser(group).parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
