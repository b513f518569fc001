#!/usr/bin/env bash
# The ablation of docs/results.md: the same stage-1 recipe for every variant (6 epochs x 16000
# triplets, the default); ASEN++ adds its stage 2 (3 epochs). Test MAP through the encoder.
# Usage: bench/ablation.sh DATA_DIR RUNS_DIR [variant ...]
set -euo pipefail
data=${1:-data/demo}; runs=${2:-runs/ablation}; shift 2 || true
variants=("$@"); [ ${#variants[@]} -gt 0 ] || variants=(asen++ asen-global csn triplet asen-global-s32)
mkdir -p "$runs"
for v in "${variants[@]}"; do
  out="$runs/$v"; extra=()
  case "$v" in
    asen-global-s32) extra=(--variant asen-global --stride 32) ;;
    asen-global-160) extra=(--variant asen-global --global-size 160) ;;
    asen-global-288) extra=(--variant asen-global --global-size 288) ;;
    asen++-local160) extra=(--variant asen++ --local-size 160) ;;
    asen++-288) extra=(--variant asen++ --global-size 288) ;;
    *) extra=(--variant "$v") ;;
  esac
  if [ ! -f "$out/test.json" ]; then
    /usr/bin/time -f "$v train wall %e s, max RSS %M KB" asen train --data "$data" --out "$out" "${extra[@]}" \
      > "$runs/$v.train.log" 2>&1
    tail -n 1 "$runs/$v.train.log"
    asen eval --data "$data" --checkpoint "$out/best.pt" --split test --json "$out/test.json" > "$runs/$v.eval.log" 2>&1
  fi
  echo "== $v"; cat "$out/test.json"
done
