#!/usr/bin/env bash
# Quality runs of docs/results.md ("Quality"): train one recipe with several seeds, then test MAP,
# Recall@1/10 and nDCG@10 of each through the encoder (asen eval). Wall time per run in RUNS/NAME-sSEED.time.
# Usage: bench/quality.sh DATA RUNS NAME "SEEDS" [asen train args...]
#   bench/quality.sh data/demo runs/quality default "0 1 2"
#   bench/quality.sh data/demo runs/quality budget10 "0" --time-budget 10
# Then: .venv/bin/python bench/ablation_table.py default=runs/quality/default-s0/test.json,runs/quality/default-s1/test.json,...
# ASEN overrides the command (default: asen on the PATH, else .venv/bin/asen).
set -euo pipefail
data=$1; runs=$2; name=$3; seeds=$4; shift 4
asen=${ASEN:-$(command -v asen || echo .venv/bin/asen)}
mkdir -p "$runs"
for seed in $seeds; do
  out="$runs/$name-s$seed"
  if [ ! -f "$out/summary.json" ]; then
    rm -rf "$out"
    /usr/bin/time -f "%e" -o "$out.time" $asen train --data "$data" --out "$out" --seed "$seed" "$@" > "$out.train.log" 2>&1
  fi
  if [ ! -f "$out/test.json" ]; then
    $asen eval --data "$data" --checkpoint "$out/best.pt" --split test --json "$out/test.json" > "$out.eval.log" 2>&1
  fi
  echo "== $name seed $seed: $(cat "$out.time") s, test MAP $(python3 -c "import json,sys; print(round(100*json.load(open(sys.argv[1]))['overall_map'],2))" "$out/test.json")"
done
