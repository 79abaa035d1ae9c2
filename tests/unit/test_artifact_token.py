"""The vehicle's bearer token goes to an artifact URL only when scheme, host and port all
match the cloud's URL (issue #14 item 6)."""

from __future__ import annotations

from pathlib import Path

import pytest

from muto.agent.artifacts import CachedArtifacts
from muto.agent.cache import ArtifactCache

CLOUD = "https://cloud.example:8443"


@pytest.mark.parametrize(
    ("url", "gets_token"),
    [
        ("https://cloud.example:8443/artifacts/a.tar.gz", True),
        ("https://CLOUD.example:8443/a", True),  # host names are case-insensitive
        ("http://cloud.example:8443/a", False),  # plain http to the same host and port
        ("https://cloud.example/a", False),  # another port (443)
        ("https://cloud.example:9443/a", False),
        ("https://evil.example:8443/a", False),
        ("https://cloud.example:8443@evil.example/a", False),  # userinfo, host is evil
        ("https://cloud.example:bad/a", False),
        ("ftp://cloud.example:8443/a", False),
    ],
)
def test_the_token_goes_only_to_the_clouds_origin(
    tmp_path: Path, url: str, gets_token: bool
) -> None:
    artifacts = CachedArtifacts(
        ArtifactCache(tmp_path, 1 << 20), base_url=CLOUD + "/", token="t0k", token_origin=CLOUD
    )
    sent = artifacts.headers_for(url)
    assert sent == ({"Authorization": "Bearer t0k"} if gets_token else {})


@pytest.mark.parametrize(
    ("cloud", "url"),
    [
        ("https://cloud.example", "https://cloud.example:443/a"),
        ("http://cloud.example:80", "http://cloud.example/a"),
    ],
)
def test_default_ports_are_the_same_origin(tmp_path: Path, cloud: str, url: str) -> None:
    artifacts = CachedArtifacts(ArtifactCache(tmp_path, 1 << 20), token="t", token_origin=cloud)
    assert artifacts.headers_for(url) == {"Authorization": "Bearer t"}
