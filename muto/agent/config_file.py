"""The agent configuration in force, mirrored to a file other on-board tools can read.

The journal is the truth (ConfigApplied); this file follows it, replaced atomically
(temp file, fsync, rename), and is rewritten on start if it differs.
"""

from __future__ import annotations

from pathlib import Path

from muto.domain.desired import AgentConfig
from muto.domain.wire import WireError, decode, encode
from muto.trust.files import atomic_write

CONFIG_FILE = "agent-config.json"


def store_config(path: Path, config: AgentConfig) -> bool:
    """Write `config` unless the file already says exactly that; True if written."""
    data = encode(config) + b"\n"
    try:
        if path.read_bytes() == data:
            return False
    except OSError:
        pass
    atomic_write(path, data)
    return True


def load_config(path: Path) -> AgentConfig | None:
    try:
        return decode(path.read_bytes(), AgentConfig)
    except (OSError, WireError):
        return None
