"""The agent's journal: an append-only local event log, replayed on start."""

from muto.agent.journal.journal import Journal, JournalLocked, JournalUnreadable, Record
from muto.agent.journal.state import JournalState

__all__ = ["Journal", "JournalLocked", "JournalState", "JournalUnreadable", "Record"]
