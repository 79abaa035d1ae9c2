"""One rule says when a newer intent supersedes a rollout's member
(`rollout_rules.supersedes`): the controller applies it on the aggregates, the rollouts
view in log order, and they agree. Plain data: the rule's cases, the aggregate's state
from before the fields were kept, the audit's line."""

from __future__ import annotations

from typing import Any

import pytest

from muto.audit.lines import LINES
from muto.domain.events import RolloutPolicy
from muto.domain.model.rollout import Rollout
from muto.domain.requests import RolloutThresholds
from muto.domain.rollout_rules import NOT_SUPERSEDED, MemberStatus, supersedes

OURS, OTHER = "ro-new", "ro-old"


NEW, OLD = "core@2.0.0", "core@1.0.0"


@pytest.mark.parametrize(
    ("given", "current", "current_rollout", "current_release", "since", "expected"),
    [
        # Pending members (not given the rollout's revision yet).
        (None, "direct", None, OLD, True, True),  # a direct assignment since the start
        (None, "rb", OTHER, OLD, True, True),  # another rollout's rollback since the start
        (None, "wave", OTHER, NEW, True, True),  # another rollout's wave since the start
        (None, "before", None, OLD, False, False),  # what it had at the start (or renewed)
        (None, "before", OTHER, OLD, False, False),  # another rollout's, before the start
        (None, None, None, None, False, False),  # no desired state at all
        # Members given the rollout's revision "ours" (of NEW).
        ("ours", "ours", OURS, NEW, True, False),  # still ours
        ("ours", "direct", None, OLD, True, True),  # replaced by a direct assignment
        ("ours", "direct", None, NEW, True, True),  # ... even of the rollout's release
        ("ours", "rb", OTHER, OLD, True, True),  # another rollout's rollback elsewhere
        ("ours", "rb", OTHER, NEW, True, False),  # another's rollback back to ours
        ("ours", "own-rb", OURS, OLD, True, False),  # our own rollback never supersedes
    ],
)
def test_a_newer_intent_from_anyone_but_the_rollout_supersedes(
    given: str | None,
    current: str | None,
    current_rollout: str | None,
    current_release: str | None,
    since: bool,
    expected: bool,
) -> None:
    found = supersedes(OURS, NEW, given, current, current_rollout, current_release, since)
    assert found is expected


def test_members_out_of_the_rollout_are_not_superseded_again() -> None:
    assert {
        MemberStatus.LEFT,
        MemberStatus.SUPERSEDED,
        MemberStatus.ROLLING_BACK,
        MemberStatus.ROLLED_BACK,
    } == NOT_SUPERSEDED


def rollout(**extra: Any) -> Rollout:
    return Rollout(
        rollout_id=OURS,
        selector="model=m3",
        release_key="core@2.0.0",
        manifest_digest="sha256:x",
        policy=RolloutPolicy(),
        thresholds=RolloutThresholds(),
        canaries=["v0"],
        wave=["v1"],
        previous_releases={"v0": None, "v1": None},
        started_at="2026-01-01T00:00:00+00:00",
        actor="controller",
        correlation_id="c",
        **extra,
    )


def test_a_rollout_from_before_the_fields_has_none_superseded_and_no_start_record() -> None:
    """A snapshot taken before `superseded` and the start's revisions were kept: its
    state lacks them; the aggregate answers all the same, and records one."""
    r = rollout()
    del r.__dict__["superseded"], r.__dict__["revisions_at_start"]
    assert r.superseded == {} and r.members() == {"v0", "v1"}
    assert r.desired_at_start("v1") == (False, None)
    r.supersede({"v1": "dsr_x"}, "2026-01-01T00:01:00+00:00", "controller", "c")
    assert r.superseded == {"v1": "dsr_x"} and r.members() == {"v0"}


def test_the_start_records_each_members_revision() -> None:
    r = rollout(desired_at_start={"v0": None, "v1": "dsr_before"})
    assert r.desired_at_start("v1") == (True, "dsr_before")
    assert r.desired_at_start("v0") == (True, None)
    assert r.desired_at_start("v9") == (False, None)


def test_the_audit_says_a_member_superseded_by_no_revision_well() -> None:
    line = LINES["Rollout.MembersSuperseded"]({"superseded_by": {"v1": None, "v2": "dsr_2"}})
    assert "None" not in line
    assert "v1 (it has no desired state now)" in line and "v2 by dsr_2" in line
