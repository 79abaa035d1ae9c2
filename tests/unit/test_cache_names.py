"""What the cache accepts as a digest, and what it reads from a Content-Range."""

from __future__ import annotations

import pytest

from muto.agent.cache.download import range_start
from muto.agent.cache.layout import digest_of, hex_of

HEX = "ab" * 32


def test_a_sha256_digest_names_its_hex() -> None:
    assert hex_of(f"sha256:{HEX}") == HEX
    assert digest_of(HEX) == f"sha256:{HEX}"


@pytest.mark.parametrize(
    "bad", ["", HEX, f"sha256:{HEX.upper()}", f"sha256:{HEX}0", "sha256:../../x", f"md5:{HEX}"]
)
def test_anything_else_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        hex_of(bad)


@pytest.mark.parametrize(
    ("header", "start"),
    [
        ("bytes 100-999/1000", 100),
        ("bytes 0-0/1", 0),
        ("bytes 5-9/*", 5),
        (" bytes 7-9/10 ", 7),
        ("bytes */1000", None),
        ("items 1-2/3", None),
        ("", None),
        (None, None),
    ],
)
def test_content_range_start(header: str | None, start: int | None) -> None:
    assert range_start(header) == start
