#!/usr/bin/env bash
# The short CPU versions committed in results/ (see docs/experiments.md).
# Machine: 2-core Intel Xeon @ 2.50GHz, no GPU, shared with other jobs (load ~6-7 while these ran);
# one intra-op thread per run. About 29 minutes of wall time in all on that loaded machine
# (roughly 14 minutes of CPU time).
# Each run is also tracked in MLflow under ./mlruns.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
common=(--eval-samples 500 --quiet --out results)
uv run marketplace experiment backprop --steps 200 --scale 0.25 --batch 32 --eval-every 20 "${common[@]}"
uv run marketplace experiment depth --algorithm v2 --steps 200 --scale 0.25 --batch 16 --eval-every 20 "${common[@]}"
uv run marketplace experiment norm --steps 160 --scale 0.25 --batch 32 --eval-every 20 "${common[@]}"
uv run marketplace experiment sweep --steps 100 --scale 0.125 --batch 32 --lrs 0.1,0.3 --decays 1e-2,1e-5 --eval-every 10 "${common[@]}"
