"""Which health report is no news beside the vehicle's last health transition
(report_order.health_overtaken): the same report again, or one said before it in the
same journal. Plain data and hypothesis."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from muto.domain.report_order import ReportPlace, health_overtaken

incarnations = st.sampled_from(["inc-a", "inc-b"])
numbers = st.integers(min_value=1, max_value=2**63 - 1)
places = st.builds(ReportPlace, incarnation=incarnations, number=numbers)
ids = st.sampled_from(["h-1", "h-2", "h-3"])


@given(st.none() | places, st.none() | places)
def test_the_last_transitions_own_report_is_never_news(
    last: ReportPlace | None, place: ReportPlace | None
) -> None:
    assert health_overtaken(last, "h-1", place, "h-1")


@given(st.none() | places, ids, st.none() | places, ids)
def test_only_an_earlier_place_in_the_same_journal_or_the_same_report_is_overtaken(
    last: ReportPlace | None, last_id: str, place: ReportPlace | None, report_id: str
) -> None:
    same_journal = last is not None and place is not None and place.incarnation == last.incarnation
    earlier = same_journal and place is not None and last is not None and place.number < last.number
    assert health_overtaken(last, last_id, place, report_id) == (report_id == last_id or earlier)


def test_examples() -> None:
    last = ReportPlace(incarnation="inc-a", number=20)
    assert health_overtaken(last, "h-2", ReportPlace(incarnation="inc-a", number=10), "h-1")
    # a report the agent could not journal says the next position: a later one queued
    # there is still news (another id)
    assert not health_overtaken(last, "h-2", ReportPlace(incarnation="inc-a", number=20), "h-3")
    assert not health_overtaken(last, "h-2", ReportPlace(incarnation="inc-b", number=1), "h-3")
    assert not health_overtaken(last, "h-2", None, "h-3")  # an agent before places
    assert not health_overtaken(None, None, ReportPlace(incarnation="inc-a", number=1), "h-1")
