"""The API bench's request-metrics figures (measured by bench/api.py) as a section of
their own: `python -m bench api_metrics`."""

from bench.api import METRICS_NOTES as NOTES
from bench.api import METRICS_TITLE as TITLE
from bench.api import run_metrics as run

__all__ = ["NOTES", "TITLE", "run"]
