"""The API bench's request-metrics figures (bench/api/metrics.py) as a section of
their own: `python -m bench api_metrics`."""

from bench.api.metrics import METRICS_NOTES as NOTES
from bench.api.metrics import METRICS_TITLE as TITLE
from bench.api.metrics import run_metrics as run

__all__ = ["NOTES", "TITLE", "run"]
