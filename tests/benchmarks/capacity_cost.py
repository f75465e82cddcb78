"""What a capacity search costs beside a fixed sweep that reaches the same answer.

Both measure the simulator of tests/data/scenarios/capacity.yaml (capacity 22.5 to 24.03
users, derived in tests/e2e/test_capacity.py), each probe a whole `harness run` process:

- the search: `harness capacity` from the scenario's 8 users, knowing nothing else;
- a sweep of 10 runs at 16, 17, ... 25 users: a sweep needs 1-user steps to reach the same
  answer, and this one is given the right range for free (a real sweep would not know it).

Printed: the answer, probes, requests, measured seconds and wall minutes of each, and the
sweep's cost over the search's.

    .venv/bin/python tests/benchmarks/capacity_cost.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = "tests/data/scenarios/capacity.yaml"
HARNESS = [sys.executable, "-m", "harness"]


def search(out: Path) -> dict[str, float]:
    start = time.monotonic()
    subprocess.run([*HARNESS, "capacity", SCENARIO, "--out", str(out)], cwd=ROOT, check=True,
                   capture_output=True)  # fmt: skip
    wall = time.monotonic() - start
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    doc = json.loads((folder / "capacity.json").read_text())
    spent = doc["spent"]
    return {"answer": doc["capacity"]["level"], "probes": spent["probes"], "wall_s": wall,
            "requests": spent["requests"], "measured_s": spent["measured_s"]}  # fmt: skip


def sweep(out: Path, levels: range) -> dict[str, float]:
    start = time.monotonic()
    held, requests, measured = 0, 0, 0.0
    for users in levels:
        folder = out / f"users-{users}"
        subprocess.run([*HARNESS, "run", SCENARIO, "--out", str(folder), "--set",
                        f"load.arrival.users={users}"], cwd=ROOT, capture_output=True)  # fmt: skip
        (run_dir,) = [p for p in folder.iterdir() if p.is_dir()]
        verdict = json.loads((run_dir / "verdict.json").read_text())
        requests += verdict["summary"]["requests"]
        measured += verdict["summary"]["duration_s"]
        critical = [o for o in verdict["objectives"] if o["critical"]]
        if all(o["verdict"] == "PASS" for o in critical):
            held = max(held, users)
    return {"answer": held, "probes": len(levels), "requests": requests,
            "measured_s": round(measured, 1), "wall_s": time.monotonic() - start}  # fmt: skip


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="capacity-cost-") as tmp:
        found = search(Path(tmp) / "search")
        swept = sweep(Path(tmp) / "sweep", range(16, 26))
    print(f"{'':8} {'answer':>7} {'probes':>7} {'requests':>9} {'measured s':>11} {'wall min':>9}")
    for name, row in (("search", found), ("sweep", swept)):
        print(f"{name:8} {row['answer']:>7g} {row['probes']:>7g} {row['requests']:>9,.0f} "
              f"{row['measured_s']:>11.1f} {row['wall_s'] / 60:>9.2f}")  # fmt: skip
    ratios = [f"{key} x{swept[key] / found[key]:.2f}" for key in ("probes", "requests", "wall_s")]
    print("sweep / search: " + ", ".join(ratios))


if __name__ == "__main__":
    main()
