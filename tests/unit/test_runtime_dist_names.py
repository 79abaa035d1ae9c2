"""Distribution names: PEP 503 normalisation and wheel file names."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from muto.agent.runtime.dist_names import (
    normalize_dist_name,
    parse_wheel_filename,
    wheel_filename,
    wheel_filename_from_ref,
    wheel_filename_in,
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


def wheel_text(*tags: str, build: str = "") -> str:
    lines = ["Wheel-Version: 1.0", "Root-Is-Purelib: false", *(f"Tag: {t}" for t in tags)]
    return "\n".join(lines + ([f"Build: {build}"] if build else [])) + "\n"


def metadata_text(name: str, version: str) -> str:
    return f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\nName: not a header\n"


@pytest.mark.parametrize(
    ("name", "version", "wheel", "expected"),
    [
        (
            "lucid-agent-cpu",
            "1.0.0",
            wheel_text("py3-none-any"),
            "lucid_agent_cpu-1.0.0-py3-none-any.whl",
        ),
        (
            "Lucid.Agent__CPU",
            "2.1rc1",
            wheel_text("py2-none-any", "py3-none-any", build="1"),
            "lucid_agent_cpu-2.1rc1-1-py2.py3-none-any.whl",
        ),
        (
            "numpy",
            "1.26.4",
            wheel_text("cp311-cp311-manylinux_2_17_x86_64", "cp311-cp311-manylinux2014_x86_64"),
            "numpy-1.26.4-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        ),
    ],
)
def test_a_wheel_file_name_from_the_wheels_own_metadata(
    name: str, version: str, wheel: str, expected: str
) -> None:
    assert wheel_filename(metadata_text(name, version), wheel) == expected


@pytest.mark.parametrize(
    ("metadata", "wheel", "problem"),
    [
        ("Metadata-Version: 2.1\nName: lucid\n", wheel_text("py3-none-any"), "no Version"),
        (metadata_text("lucid agent", "1.0"), wheel_text("py3-none-any"), "not a distribution"),
        (metadata_text("lucid", "1.0 beta"), wheel_text("py3-none-any"), "Version '1.0 beta'"),
        (metadata_text("lucid", "1.0"), wheel_text(), "has no Tag"),
        (metadata_text("lucid", "1.0"), wheel_text("py3-any"), "malformed Tag"),
        (metadata_text("lucid", "1.0"), wheel_text("py3-none-any", build="x1"), "Build 'x1'"),
    ],
)
def test_metadata_that_makes_no_wheel_file_name(metadata: str, wheel: str, problem: str) -> None:
    with pytest.raises(ReasonError) as failure:
        wheel_filename(metadata, wheel)
    assert failure.value.code == ReasonCode.APPLY_FAILED
    assert problem in failure.value.detail


@given(spellings(), st.from_regex(r"[0-9]+(\.[0-9]+){0,2}(rc[0-9])?", fullmatch=True))
def test_the_wheel_file_name_made_reads_back_as_the_metadata(
    case: tuple[list[str], str], version: str
) -> None:
    _, spelled = case
    made = wheel_filename(metadata_text(spelled, version), wheel_text("py3-none-any"))
    assert parse_wheel_filename(made) == (normalize_dist_name(spelled), version)


def zip_of(path: Path, members: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    return path


GOOD = {
    "lucid/__init__.py": "",
    "lucid-1.0.dist-info/METADATA": metadata_text("lucid", "1.0"),
    "lucid-1.0.dist-info/WHEEL": wheel_text("py3-none-any"),
}


def test_a_wheel_file_name_from_the_wheel_file(tmp_path: Path) -> None:
    assert wheel_filename_in(zip_of(tmp_path / "blob", GOOD)) == "lucid-1.0-py3-none-any.whl"


@pytest.mark.parametrize(
    ("members", "problem"),
    [
        ({"lucid/__init__.py": ""}, "it holds no *.dist-info directories"),
        (
            {**GOOD, "other-1.0.dist-info/WHEEL": ""},
            "it holds 2 (lucid-1.0.dist-info, other-1.0.dist-info) *.dist-info directories",
        ),
        (
            {k: v for k, v in GOOD.items() if not k.endswith("WHEEL")},
            "it has no lucid-1.0.dist-info/WHEEL",
        ),
        (
            {**GOOD, "lucid-1.0.dist-info/METADATA": metadata_text("nav", "1.0")},
            "lucid-1.0.dist-info is not of its METADATA Name",
        ),
        ({**GOOD, "lucid-1.0.dist-info/WHEEL": wheel_text()}, "its WHEEL has no Tag"),
    ],
)
def test_a_zip_that_is_no_wheel(tmp_path: Path, members: dict[str, str], problem: str) -> None:
    with pytest.raises(ReasonError) as failure:
        wheel_filename_in(zip_of(tmp_path / "blob", members))
    assert failure.value.code == ReasonCode.APPLY_FAILED
    assert failure.value.detail == f"not a wheel: {problem}"


def test_a_file_that_is_no_zip(tmp_path: Path) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(b"not a zip")
    with pytest.raises(ReasonError) as failure:
        wheel_filename_in(blob)
    assert failure.value.code == ReasonCode.APPLY_FAILED
    assert failure.value.detail == "not a wheel: File is not a zip file"
