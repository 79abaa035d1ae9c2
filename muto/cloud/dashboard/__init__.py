"""The read-only web dashboard served by `muto cloud serve` under /ui (docs/dashboard.md):
server-rendered Jinja2 pages and two small static files; no build step."""

from muto.cloud.dashboard.pages import mount

__all__ = ["mount"]
