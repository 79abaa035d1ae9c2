"""Distribution names: PEP 503 normalisation and wheel file names."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from muto.agent.runtime.dist_names import (
    normalize_dist_name,
    parse_wheel_filename,
    wheel_filename_from_ref,
)
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode

NORMALISED = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
SEPARATOR = st.sampled_from(["-", "_", ".", "--", "_.", "-_-"])
WORD = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1
)


@st.composite
def spellings(draw: st.DrawFn) -> tuple[list[str], str]:
    """Words of one name, and one way to spell them (any separators, any case)."""
    words = draw(st.lists(WORD, min_size=1, max_size=4))
    seps = [draw(SEPARATOR) for _ in words[1:]]
    spelled = words[0] + "".join(s + w for s, w in zip(seps, words[1:], strict=True))
    return words, spelled


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("lucid_agent_cpu-1.0.0-py3-none-any.whl", ("lucid-agent-cpu", "1.0.0")),
        ("Lucid.Agent_CPU-2.1rc1-1-py3-none-any.whl", ("lucid-agent-cpu", "2.1rc1")),
        ("numpy-1.26.4-cp311-cp311-manylinux_2_17_x86_64.whl", ("numpy", "1.26.4")),
    ],
)
def test_wheel_file_names(filename: str, expected: tuple[str, str]) -> None:
    assert parse_wheel_filename(filename) == expected


@pytest.mark.parametrize(
    "filename", ["lucid_agent_cpu-1.0.0.tar.gz", "lucid-1.0.whl", "-1.0-py3-none-any.whl"]
)
def test_not_wheel_file_names(filename: str) -> None:
    with pytest.raises(ReasonError) as failure:
        parse_wheel_filename(filename)
    assert failure.value.code == ReasonCode.APPLY_FAILED


@pytest.mark.parametrize("name", ["", "-lucid", "lucid-", "lucid agent", "lucid/agent"])
def test_not_distribution_names(name: str) -> None:
    with pytest.raises(ReasonError):
        normalize_dist_name(name)


def test_wheel_file_name_from_an_artifact_ref() -> None:
    url = "https://artifacts.example/wheels/lucid_agent_cpu-1.0.0-py3-none-any.whl?sig=x"
    assert wheel_filename_from_ref(url) == "lucid_agent_cpu-1.0.0-py3-none-any.whl"
    assert wheel_filename_from_ref("oci://registry/nav:1") is None


@given(spellings())
def test_every_spelling_of_a_name_normalises_to_the_same(case: tuple[list[str], str]) -> None:
    words, spelled = case
    normal = normalize_dist_name(spelled)
    assert normal == "-".join(words).lower()
    assert NORMALISED.match(normal)
    assert normalize_dist_name(normal) == normal


@given(spellings(), st.from_regex(r"[0-9]+(\.[0-9]+){0,2}", fullmatch=True))
def test_the_wheel_name_and_the_declared_name_agree(
    case: tuple[list[str], str], version: str
) -> None:
    _, spelled = case
    escaped = re.sub(r"[-_.]+", "_", spelled)  # how wheel builders escape the name
    assert parse_wheel_filename(f"{escaped}-{version}-py3-none-any.whl") == (
        normalize_dist_name(spelled),
        version,
    )
