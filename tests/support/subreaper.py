"""What systemd is to a real agent, for the tests that kill one with SIGKILL and look at
what it left running."""

from __future__ import annotations

import subprocess

# It adopts orphans (a child subreaper) and reaps them, so a killed process really
# disappears (this machine's PID 1 leaves zombies). Run as `python -c INIT ARGV...`: it
# runs ARGV (the agent), prints how the agent ended, and exits once no descendant is left.
INIT = """
import ctypes, os, subprocess, sys
if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
    sys.exit("prctl failed")
agent = subprocess.Popen(sys.argv[1:])
while True:
    try:
        pid, status = os.wait()
    except ChildProcessError:
        break
    if pid == agent.pid:
        print(os.waitstatus_to_exitcode(status), flush=True)
"""


def close(init: subprocess.Popen[str]) -> None:
    """End the subreaper (still running only if the test failed) and close its pipe."""
    init.kill()
    init.wait()
    assert init.stdout is not None
    init.stdout.close()
