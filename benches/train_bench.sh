#!/usr/bin/env bash
# Benchmark (not a test). Prints a markdown table: one DreamBooth LoRA training step of hfsky
# against the same step in PyTorch diffusers + peft (benches/train_step_reference.py), side by
# side in one run, on the tiny fixtures (tests/fixtures/tiny-sd15, tiny-sdxl), CPU, f32, batch 1,
# the fixtures' native 64 px, rank-4 LoRA on to_q,to_k,to_v,to_out.0, AdamW, center crop.
# Each cell is the median ms/step over BENCH_STEPS steps after BENCH_WARMUP warm-up steps; both
# sides run with OMP_NUM_THREADS = RAYON_NUM_THREADS = torch threads = T, for T in BENCH_THREADS.
#   BENCH_STEPS=30  BENCH_WARMUP=5  BENCH_THREADS="1 2"  HFSKY=target/release/hfsky
#   PYTHON=<python with torch, diffusers, peft> (default: ./scripts/pyref-venv.sh, which installs it)
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS="${BENCH_STEPS:-30}"
WARMUP="${BENCH_WARMUP:-5}"
THREADS="${BENCH_THREADS:-1 2}"
HFSKY="${HFSKY:-target/release/hfsky}"
PY="${PYTHON:-$(./scripts/pyref-venv.sh)}"
if [ "$HFSKY" = target/release/hfsky ]; then cargo build --release --locked; fi
[ -x "$HFSKY" ] || { echo "no executable $HFSKY (cargo build --release, or set HFSKY)" >&2; exit 2; }
"$PY" -c "import torch, diffusers, peft, PIL" 2>/dev/null \
  || { echo "need torch, diffusers, peft and Pillow in $PY (run ./scripts/pyref-venv.sh, or set PYTHON)" >&2; exit 2; }

W="$(mktemp -d)"
trap 'rm -rf "$W"' EXIT
trap 'exit 130' INT TERM

# A few small photos, larger than 64 px and not square, so both sides resize and center-crop.
"$PY" - "$W/photos" <<'PY'
import os, sys
import numpy as np
from PIL import Image
out = sys.argv[1]
os.makedirs(out)
rng = np.random.default_rng(0)
y, x = np.mgrid[0:80, 0:96]
for i in range(4):
    a = np.stack([(2 * x + 30 * i) % 256, (3 * y) % 256, ((x + y) * i) % 256], -1).astype(np.float32)
    a += rng.normal(0, 20, a.shape)
    Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(os.path.join(out, f"photo{i}.png"))
PY

median_after_warmup() {
  "$PY" - "$1" "$WARMUP" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
secs = [r["seconds"] for r in rows[int(sys.argv[2]):]]
if not secs:
    sys.exit(f"{sys.argv[1]}: no steps after the warm-up")
print(f"{1000 * statistics.median(secs):.1f}")
PY
}

ROWS=()
for m in tiny-sd15 tiny-sdxl; do
  for t in $THREADS; do
    out="$W/out-$m-$t"
    HF_HOME="$W/hf-home" OMP_NUM_THREADS=$t RAYON_NUM_THREADS=$t "$HFSKY" -q train --cache-dir "$W/cache-$m-$t" \
      --base-model "tests/fixtures/$m" --dataset "$W/photos" --instance-prompt "a photo of SKY" --output-dir "$out" \
      --max-steps "$((STEPS + WARMUP))" --center-crop --rank 4 --target-modules to_q,to_k,to_v,to_out.0 \
      --precision f32 --device cpu --train-batch-size 1 \
      > "$W/hfsky-$m-$t.log" 2>&1 || { echo "hfsky train failed ($m, $t threads):" >&2; cat "$W/hfsky-$m-$t.log" >&2; exit 1; }
    rs=$(median_after_warmup "$out/training_log.jsonl")
    py=$(OMP_NUM_THREADS=$t RAYON_NUM_THREADS=$t "$PY" benches/train_step_reference.py --model "tests/fixtures/$m" \
      --photos "$W/photos" --steps "$STEPS" --warmup "$WARMUP" --threads "$t" 2>"$W/py-$m-$t.log" \
      | "$PY" -c 'import json, sys; print("%.1f" % json.loads(sys.stdin.read())["median_ms"])') \
      || { echo "reference failed ($m, $t threads):" >&2; cat "$W/py-$m-$t.log" >&2; exit 1; }
    ROWS+=("$(printf "| %s | %s | %s | %s | %.2f |" "$m" "$t" "$rs" "$py" "$(awk "BEGIN { print $rs / $py }")")")
  done
done

VERS="$("$PY" -c 'import torch, diffusers, peft; print(f"torch {torch.__version__}, diffusers {diffusers.__version__}, peft {peft.__version__}")')"
echo
echo "Median ms/step over $STEPS steps after $WARMUP warm-up, CPU f32, batch 1, 64 px, rank 4; $(nproc) cores; $VERS."
echo
echo "| model | threads | hfsky ms/step | diffusers+peft ms/step | hfsky / diffusers |"
echo "|---|--:|--:|--:|--:|"
printf "%s\n" "${ROWS[@]}"
