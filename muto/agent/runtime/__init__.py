"""Runtime adapters: how a release runs on a vehicle (see base.py for the port)."""

from muto.agent.runtime.base import RuntimeAdapter, RuntimeStatus
from muto.agent.runtime.factory import RUNTIMES, build_runtime

__all__ = ["RUNTIMES", "RuntimeAdapter", "RuntimeStatus", "build_runtime"]
