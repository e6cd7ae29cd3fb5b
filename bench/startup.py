"""How fast ``formicary --help`` answers: the median of 5 runs in fresh processes (target < 0.5 s).

litellm (3 s to import), openai and textual load only where they are used, so the CLI itself stays light.
Prints one JSON line. Run from the repository root: ``python -m bench.startup`` or
``python bench/startup.py``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time


def main(runs: int = 5) -> None:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "formicary", "--help"], check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    print(
        json.dumps(
            {
                "bench": "startup",
                "runs": runs,
                "help_median_s": round(statistics.median(times), 3),
                "help_max_s": round(max(times), 3),
                "target_s": 0.5,
            }
        )
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh processes to time")
    main(parser.parse_args().runs)
