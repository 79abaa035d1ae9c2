"""A token that cannot be one (not visible ASCII: a newline, a control character, a
non-ASCII letter) is refused before any request, naming where it came from and never
the token itself: unchecked it was a traceback (httpx's UnicodeEncodeError), 'cannot
reach the control plane' (a newline) or the server's 400."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from muto.fleetctl.connection import USAGE, Connection, FleetError, checked_token, save_context

URL = "http://saved.example:8080"


def resolve(env: dict[str, str], token_file: Path | None = None) -> Connection:
    args = argparse.Namespace(url=URL, token_file=str(token_file) if token_file else None)
    return Connection.resolve(args, env)


def refusal(env: dict[str, str], token_file: Path | None = None) -> str:
    with pytest.raises(FleetError) as refused:
        resolve(env, token_file)
    assert refused.value.exit_code == USAGE
    return refused.value.message


@pytest.mark.parametrize("bad", ["tok€n", "a\nb", "muto_abc\x01def", "a b", "a\tb"])
def test_each_source_is_named_and_the_token_never_shown(tmp_path: Path, bad: str) -> None:
    none = {"MUTO_CONTEXT": str(tmp_path / "none.json")}
    said = refusal({**none, "MUTO_TOKEN": bad})
    assert said.startswith("MUTO_TOKEN does not hold a token") and "muto_abc" not in said
    held = tmp_path / "bad.token"
    held.write_bytes(bad.encode() + b"\n")
    said = refusal(none, held)
    assert said.startswith(f"the token file {held} does not hold") and "muto_abc" not in said
    context = tmp_path / "context.json"
    save_context(URL, bad, context)
    said = refusal({"MUTO_CONTEXT": str(context)})
    assert said.startswith(f"the context {context} does not hold")


def test_a_file_that_is_not_utf8_is_refused_as_well(tmp_path: Path) -> None:
    held = tmp_path / "bad.token"
    held.write_bytes(b"x\xff")
    assert "character 2" in refusal({"MUTO_CONTEXT": str(tmp_path / "no")}, held)


def test_surrounding_whitespace_is_no_part_of_a_token(tmp_path: Path) -> None:
    env = {"MUTO_CONTEXT": str(tmp_path / "no"), "MUTO_TOKEN": " muto_abc_def\n"}
    assert resolve(env).token == "muto_abc_def"


@given(st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1))
def test_every_visible_ascii_token_passes(token: str) -> None:
    assert checked_token(token, "x") == token


@given(st.text(min_size=1).filter(lambda t: any(not "!" <= c <= "~" for c in t)))
def test_any_other_character_is_refused(token: str) -> None:
    with pytest.raises(FleetError):
        checked_token(token, "x")
