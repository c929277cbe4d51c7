"""Run every benchmark of the package in turn with its defaults; each writes into benchmarks/results/.

    python benchmarks/run_all.py                 # all of them, on this machine
    python benchmarks/run_all.py hessian eval    # only those whose name contains a word given

Benchmarks are timings: run them on an otherwise idle machine (each result file records the
machine and the load average).
"""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ("discovery_speed", "generator_speed", "hessian_speed", "synthesis_speed", "eval_speed", "predict_speed", "refine_quality")


def main(words: list[str]) -> int:
    failed = []
    for name in SCRIPTS:
        if words and not any(word in name for word in words):
            continue
        print(f"== {name}", flush=True)
        if subprocess.call([sys.executable, str(HERE / f"{name}.py")]) != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
