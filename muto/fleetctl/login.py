"""`muto login URL --token-file F`: remember the control plane and the token for later verbs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from muto.fleetctl.connection import (
    Connection,
    checked_url,
    context_path,
    read_token,
    save_context,
)
from muto.fleetctl.output import reporting


def login(args: argparse.Namespace) -> int:
    url = checked_url(args.url, "URL")
    token = read_token(Path(args.token_file))
    if not args.no_check:
        with Connection(url, token).client(timeout=10) as api:
            api.call("GET", "/vehicles", params={"limit": 1})  # reachable, and the token works
    path = context_path()
    save_context(url, token, path)
    print(f"logged in to {url}; context in {path} (mode 0600)")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "login",
        help="remember the control plane's URL and an operator token",
        description="Check URL with the token, then write both to the context file "
        "($MUTO_CONTEXT, else ~/.config/muto/context.json, mode 0600) that every fleet "
        "verb reads when neither --url/--token-file nor MUTO_URL/MUTO_TOKEN is given.",
        epilog="example:\n  muto login http://127.0.0.1:8080 --token-file operator.token",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("url", metavar="URL")
    p.add_argument("--token-file", required=True, metavar="FILE", help="holds the bearer token")
    p.add_argument("--no-check", action="store_true", help="save without asking the server")
    p.set_defaults(func=reporting(login))
