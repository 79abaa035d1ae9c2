"""`muto`: one entry point, one subcommand group per part of the system.

Each group lives beside the code it drives and exposes `register(subparsers)`;
this table is the only place that lists them.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

# group name -> module exposing register(subparsers)
GROUPS: dict[str, str] = {
    "agent": "muto.agent.cli",
    "release": "muto.trust.cli",
    "cloud": "muto.cloud.cli",
    "demo": "muto.sim.demo",
    "sim": "muto.sim.cli",
    # The audit's verbs, composed with the cloud's log or the API (muto/fleetctl/audit.py).
    "audit": "muto.fleetctl.audit",
    # The operator's fleet verbs, over the HTTP API (muto/fleetctl).
    "login": "muto.fleetctl.login",
    "vehicles": "muto.fleetctl.vehicles",
    "releases": "muto.fleetctl.releases",
    "desired": "muto.fleetctl.desired",
    "rollouts": "muto.fleetctl.rollouts",
    "tokens": "muto.fleetctl.tokens",
    "keys": "muto.fleetctl.keys",
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
    try:
        result: int = args.func(args)
        sys.stdout.flush()
    except BrokenPipeError:
        return reader_gone()
    return result


def reader_gone() -> int:
    """The reader of stdout left (`muto ... | head`): stop quietly, as `cat` does. stdout
    goes to /dev/null so the interpreter's final flush does not raise again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 141  # 128 + SIGPIPE, what a shell reports for a command killed by it


if __name__ == "__main__":
    sys.exit(main())
