#!/usr/bin/env bash
# The whole pipeline on a GPU machine: `harness run` of the smoke scenario with NVML sampling,
# beside a 70 % duty-cycle load on GPU 0, judged by the runbook (GPU row: mean 60-80 %).
# Usage: bash docs/gpu-check/harness_run_check.sh OUT_DIR   (PYTHONPATH must reach harness
# and its dependencies; see README.md beside this file)
set -uo pipefail
out=${1:?output folder}
mkdir -p "$out"
python3 docs/gpu-check/gpu_duty.py --duty 0.7 --seconds 50 > "$out/gpu_duty.txt" 2>&1 &
load=$!
sleep 8  # the load settles before the run's warm-up starts
python3 -m harness run scenarios/smoke.yaml --out "$out/results" \
  --set collect.gpu=nvml --set collect.interval_s=0.5 > "$out/console.txt" 2>&1
echo "exit $?" >> "$out/console.txt"
wait "$load"
run=$(ls -d "$out"/results/*/ | head -1)
for f in manifest.json verdict.json summary.md; do cp "$run/$f" "$out/"; done
python3 - "$run" "$out/gpu_samples.csv" <<'PY'
import sys, pyarrow.parquet as pq, pyarrow.compute as pc
t = pq.read_table(sys.argv[1] + "/samples.parquet")
t = t.filter(pc.equal(t["source"], "nvml"))
t.to_pandas().to_csv(sys.argv[2], index=False)
print(f"{t.num_rows} NVML samples")
PY
rm -rf "$out/results"
