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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="muto", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")
    for module in GROUPS.values():
        importlib.import_module(module).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
