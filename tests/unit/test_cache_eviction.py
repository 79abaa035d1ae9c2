"""The eviction rule, with plain data: least recent first, only as much as needed."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from muto.agent.cache.eviction import Evictable, Room, plan_evictions


def files(*sizes_by_age: int) -> list[Evictable]:
    return [Evictable(f"f{i}", size, last_used_ns=i) for i, size in enumerate(sizes_by_age)]


def test_room_already_means_no_eviction() -> None:
    assert plan_evictions(Room(used=500, budget=1000, need=500), files(100, 100)) == []


def test_oldest_go_first_and_only_as_many_as_needed() -> None:
    candidates = files(100, 200, 300)
    plan = plan_evictions(Room(used=600, budget=1000, need=650), reversed(candidates))
    assert plan == candidates[:2]


def test_impossible_means_none_not_a_partial_plan() -> None:
    assert plan_evictions(Room(used=900, budget=1000, need=400), files(100, 100)) is None


def test_an_artifact_bigger_than_the_budget_never_fits() -> None:
    assert plan_evictions(Room(used=0, budget=1000, need=1001), []) is None


def test_free_disk_must_also_cover_what_is_left_to_write() -> None:
    room = Room(used=300, budget=10_000, need=500, free=200, to_write=500)
    assert plan_evictions(room, files(100, 100, 100)) == files(100, 100, 100)
    assert plan_evictions(replace(room, free=100), files(100, 100, 100)) is None


@given(
    sizes=st.lists(st.integers(0, 1000), max_size=8),
    used_extra=st.integers(0, 2000),
    budget=st.integers(0, 5000),
    need=st.integers(0, 3000),
)
def test_a_plan_is_the_shortest_lru_prefix_that_fits(
    sizes: list[int], used_extra: int, budget: int, need: int
) -> None:
    candidates = files(*sizes)
    room = Room(used=sum(sizes) + used_extra, budget=budget, need=need)

    plan = plan_evictions(room, candidates)

    if plan is None:
        assert not room.fits(sum(sizes))
    else:
        assert plan == candidates[: len(plan)]
        assert room.fits(sum(e.size for e in plan))
        assert not plan or not room.fits(sum(e.size for e in plan[:-1]))
