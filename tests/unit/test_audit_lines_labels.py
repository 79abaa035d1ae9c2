"""`muto audit explain` on a vehicle PATCH: removing a label (`muto vehicles label v1
zone-`, stored as None) reads as a removal, never as the value "None", and a part with
no change (no attributes) is left out."""

from __future__ import annotations

from typing import Any

from muto.audit.lines import LINES
from muto.cloud.dashboard.pages import templates


def line(labels: dict[str, Any], attributes: dict[str, Any]) -> str:
    return LINES["Vehicle.Updated"]({"labels": labels, "attributes": attributes})


def test_removing_a_label_is_not_setting_it_to_none() -> None:
    assert line({"zone": None}, {}) == "updated: removed label zone"
    assert line({"zone": "None"}, {}) == "updated: set labels zone=None"


def test_each_change_is_told_and_empty_parts_are_left_out() -> None:
    assert line({"b": "2", "a": "1", "x": None, "w": None}, {"os": None, "arch": "arm64"}) == (
        "updated: set labels a=1,b=2; removed labels w,x; set attributes arch=arm64; "
        "removed attribute os"
    )
    assert line({}, {"os": "ubuntu"}) == "updated: set attributes os=ubuntu"
    assert line({}, {}) == "updated: nothing changed"


def test_the_dashboard_says_removed_too() -> None:
    page = templates.env.from_string('{% from "macros.html" import facts %}{{ facts(d) }}')
    shown = " ".join(page.render(d={"labels": {"zone": None, "fleet": "a"}}).split())
    assert "zone removed" in shown and "fleet=a" in shown and "None" not in shown
