"""Compile time of each example spec in a warm process (imports and first use excluded).

.venv/bin/python benchmarks/bench_compile.py
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from unfoldgen.compiler import compile_text

ROOT = Path(__file__).resolve().parent.parent
REPEATS = 5


def main() -> None:
    specs = sorted((ROOT / "specs").glob("*.unf"))
    compile_text(specs[0].read_text(), str(specs[0]))  # warm: imports, grammar, templates
    print(f"{'spec':<16} {'unfolds':>7} {'median s':>9} {'per unfold s':>13}")
    for spec in specs:
        text = spec.read_text()
        times = []
        for _ in range(REPEATS):
            start = time.perf_counter()
            compiled = compile_text(text, str(spec))
            times.append(time.perf_counter() - start)
        median = statistics.median(times)
        count = len(compiled.lowered)
        print(f"{spec.name:<16} {count:>7} {median:>9.3f} {median / count:>13.3f}")


if __name__ == "__main__":
    main()
