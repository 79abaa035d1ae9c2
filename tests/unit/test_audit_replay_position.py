"""The audit's arguments refused before anything is read or written (exit 2): a log
position is 0 or more (`replay --position -1` was accepted and "replayed 0 events"), and
`explain --vehicle|--rollout` takes only an id the identifier rule allows."""

from __future__ import annotations

from pathlib import Path

import pytest

from muto.cli import build_parser, main


@pytest.mark.parametrize(
    ("given", "said"),
    [("-1", "a log position is 0 or more, not -1"), ("x", "expected a log position")],
)
def test_a_position_that_is_none_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], given: str, said: str
) -> None:
    out = tmp_path / "at.db"
    with pytest.raises(SystemExit) as ended:
        main(
            ["audit", "replay", "--data-dir", str(tmp_path), "--position", given, "--out", str(out)]
        )
    assert ended.value.code == 2
    assert f"argument --position: {said}" in capsys.readouterr().err
    assert not out.exists()


def test_zero_and_later_positions_are_positions() -> None:
    parse = build_parser("audit").parse_args
    for given in ("0", "40"):
        args = parse(["audit", "replay", "--position", given, "--out", "x.db"])
        assert args.position == int(given)


@pytest.mark.parametrize(("flag", "kind"), [("--vehicle", "vehicle"), ("--rollout", "rollout")])
def test_explain_refuses_an_id_that_names_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, kind: str
) -> None:
    """As every fleet verb does (docs/cli.md, "Ids"): exit 2 before anything is read."""
    with pytest.raises(SystemExit) as ended:
        main(["audit", "explain", "--data-dir", str(tmp_path / "none"), flag, "x/../y"])
    assert ended.value.code == 2
    assert f"'x/../y' is not a {kind} id" in capsys.readouterr().err
