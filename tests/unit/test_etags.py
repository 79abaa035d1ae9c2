"""The ETag memory is exact: an eviction wins over a read that raced it, a vehicle is held
from just before its assignment commits until it is announced, and nothing is
answered while this process may be missing changes."""

from __future__ import annotations

from muto.cloud.etags import DesiredEtags
from muto.projections.base import Announcer


def test_a_remembered_etag_answers_until_its_vehicle_is_assigned_again() -> None:
    etags = DesiredEtags(lambda: True)
    etags.remember("v1", '"a"', etags.generation())
    assert etags.recent("v1") == '"a"'
    etags.forget("v1")
    assert etags.recent("v1") is None


def test_an_etag_read_before_an_assignment_committed_is_not_remembered() -> None:
    etags = DesiredEtags(lambda: True)
    generation = etags.generation()  # a poll reads the view...
    etags.forget("v1")  # ...an assignment for v1 commits meanwhile...
    etags.remember("v1", '"old"', generation)  # ...the poll's read is the old one
    assert etags.recent("v1") is None


def test_an_eviction_of_another_vehicle_also_refuses_a_racing_read() -> None:
    """The count is global: cheaper than one per vehicle, and never wrong (a refused
    read only costs the next poll a query)."""
    etags = DesiredEtags(lambda: True)
    generation = etags.generation()
    etags.forget("v2")
    etags.remember("v1", '"a"', generation)
    assert etags.recent("v1") is None


def test_nothing_is_answered_while_changes_may_be_missed() -> None:
    live = [True]
    etags = DesiredEtags(lambda: live[0])
    etags.remember("v1", '"a"', etags.generation())
    live[0] = False
    assert etags.recent("v1") is None
    live[0] = True
    etags.clear()  # what the change channel does when it comes back
    assert etags.recent("v1") is None


def test_a_vehicle_held_for_a_commit_is_neither_answered_nor_remembered_until_told() -> None:
    etags = DesiredEtags(lambda: True)
    etags.remember("v1", '"a"', etags.generation())
    etags.changing("v1")  # just before the commit
    assert etags.recent("v1") is None
    etags.remember("v1", '"a"', etags.generation())  # a read of the old row, after it
    assert etags.recent("v1") is None
    etags.forget("v1")  # announced after the commit
    etags.remember("v1", '"b"', etags.generation())
    assert etags.recent("v1") == '"b"'


def test_a_batch_that_fails_releases_what_it_held() -> None:
    etags = DesiredEtags(lambda: True)
    announcer = Announcer("desired-assigned")
    announcer.append(etags.forget)
    announcer.holders.append(etags.changing)
    announcer.note("v1")
    announcer.committing()
    etags.remember("v1", '"a"', etags.generation())
    assert etags.recent("v1") is None
    announcer.discard()  # the commit failed: nothing changed, nothing stays held
    etags.remember("v1", '"a"', etags.generation())
    assert etags.recent("v1") == '"a"'
    assert announcer.pending == []
