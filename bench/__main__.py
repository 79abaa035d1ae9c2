"""`python -m bench [module ...]`: run benchmark modules, print their figures and
rewrite their sections of docs/performance.md. Add a module by naming it in MODULES."""

from __future__ import annotations

import importlib
import sys

from bench import number, ratio, section, update_doc

# bench/<name>.py, each with TITLE, run() and optionally NOTES
MODULES = ["store", "api", "rollout", "notify", "agent", "api_metrics", "topology"]


def main(names: list[str]) -> int:
    unknown = [n for n in names if n not in MODULES]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; known: {MODULES}", file=sys.stderr)
        return 2
    for name in names or MODULES:
        module = importlib.import_module(f"bench.{name}")
        print(f"== {module.TITLE}", flush=True)
        results = module.run()
        for r in results:
            print(f"{r.name}: {number(r.value)} {r.unit} ({ratio(r)} {r.baseline_name})")
        update_doc(name, section(name, module.TITLE, results, getattr(module, "NOTES", "")))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
