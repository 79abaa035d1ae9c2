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

OWNER_LABEL = "muto.runtime"
FORMAT = '{{.Names}}\t{{.State}}\t{{index .Labels "muto.release"}}'
IDLE_STATES = frozenset({"created", "configured", "exited", "stopped"})

logger = logging.getLogger("muto.agent.runtime")


def owner_label(workdir: Path) -> str:
    """`muto.runtime=<workdir>`: the containers of this workdir and of no other."""
    return f"{OWNER_LABEL}={workdir.resolve()}"


def stop_leftovers(podman: str, workdir: Path, grace_secs: str, timeout_sec: float) -> None:
    """Stop the containers a previous runtime on `workdir` started. A podman that cannot
    be asked is logged, not raised: `apply` reports it when it matters."""
    listed = _podman(
        podman, ["ps", "-a", "--filter", f"label={owner_label(workdir)}", "--format", FORMAT],
        timeout_sec,
    )  # fmt: skip
    if listed is None:
        return
    found = [line.split("\t") for line in listed.splitlines() if line.strip()]
    if not found:
        return
    names = [fields[0] for fields in found]
    if _podman(podman, ["stop", "--ignore", "--time", grace_secs, *names], timeout_sec) is None:
        return
    for name, state, *release in found:
        if state not in IDLE_STATES:
            logger.warning(
                "stopped container %s (%s) left %s by an agent that died",
                name,
                release[0] if release and release[0] else "an unknown release",
                state,
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
