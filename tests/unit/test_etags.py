"""The ETag memory is exact: an eviction wins over a read that raced it, and nothing is
answered while this process may be missing changes."""

from __future__ import annotations

from muto.cloud.etags import DesiredEtags


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
