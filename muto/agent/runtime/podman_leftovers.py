"""Containers a dead agent left: what the podman runtime stops when it is constructed.

A SIGKILLed agent leaves its container running (podman's `--restart=always` even restarts
it). For the same stack, `run --replace` would swap it; for another stack (the agent
died between stopping A and starting B, or the journal restores another stack) nothing
would stop it, and two stacks would drive one vehicle. So construction stops every
container labelled as started from this workdir, whatever its state: `podman stop` also
keeps the restart policy from bringing a crashed one back.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import msgspec

OWNER_LABEL = "muto.runtime"
IDLE_STATES = frozenset({"created", "configured", "exited", "stopped"})


class Listed(msgspec.Struct):
    """One entry of `podman ps --format json`: the JSON form carries the bare state
    ("running"); the template field `{{.State}}` renders as "Up 2 seconds ago"."""

    Names: list[str]
    State: str
    Labels: dict[str, str] | None = None


logger = logging.getLogger("muto.agent.runtime")


def owner_label(workdir: Path) -> str:
    """`muto.runtime=<workdir>`: the containers of this workdir and of no other."""
    return f"{OWNER_LABEL}={workdir.resolve()}"


def stop_leftovers(podman: str, workdir: Path, grace_secs: str, timeout_sec: float) -> None:
    """Stop the containers a previous runtime on `workdir` started. A podman that cannot
    be asked is logged, not raised: `apply` reports it when it matters."""
    listed = _podman(
        podman, ["ps", "-a", "--filter", f"label={owner_label(workdir)}", "--format", "json"],
        timeout_sec,
    )  # fmt: skip
    if listed is None:
        return
    try:
        found = msgspec.json.decode(listed.strip() or "[]", type=list[Listed])
    except msgspec.DecodeError as exc:
        logger.error("podman ps: %s; containers left by an earlier agent stay", exc)
        return
    if not found:
        return
    names = [c.Names[0] for c in found if c.Names]
    if _podman(podman, ["stop", "--ignore", "--time", grace_secs, *names], timeout_sec) is None:
        return
    for container in found:
        if container.State not in IDLE_STATES:
            release = (container.Labels or {}).get("muto.release") or "an unknown release"
            logger.warning(
                "stopped container %s (%s) left %s by an agent that died",
                container.Names[0] if container.Names else "?",
                release,
                container.State,
            )


def _podman(podman: str, args: list[str], timeout_sec: float) -> str | None:
    try:
        done = subprocess.run(
            [podman, *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_sec,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        logger.warning("podman %s: %r; containers left by an earlier agent stay", args[0], exc)
        return None
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip()
        logger.error("podman %s: %s; containers left by an earlier agent stay", args[0], detail)
        return None
    return done.stdout
