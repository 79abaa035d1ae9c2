"""The example in docs/runtimes.md runs and prints what the doc says."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "runtimes.md"


def test_the_runtimes_doc_example_runs() -> None:
    text = DOC.read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(DOC), "exec"), {"__name__": "docs_example"})
    assert out.getvalue().splitlines() == [
        "READINESS_TIMEOUT",
        "RuntimeStatus(release='nav@1.2.0', alive=True, restart_count=0, crash_looping=False,"
        " degraded=None, restarting=False)",
    ]
