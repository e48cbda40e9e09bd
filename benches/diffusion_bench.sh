#!/usr/bin/env bash
# hfsky's diffusion engine against PyTorch diffusers on this machine, in one run, with the same
# number of threads (OMP_NUM_THREADS = RAYON_NUM_THREADS), f32 on the CPU. Prints a Markdown table.
#
#   benches/diffusion_bench.sh                     everything (needs ~12 GB RAM and ~12 GB of temp disk
#                                                  for the SDXL UNet)
#   FULL=sd15 benches/diffusion_bench.sh           full-size UNet only for SD 1.5 (FULL=none: tiny only)
#   THREADS=2 REPEATS=3 UNET_REPEATS=2 PYREF_PYTHON=/path/to/python benches/diffusion_bench.sh
#
# Rows: the tiny fixture pipelines (tests/fixtures), a whole 20-step run at 64×64 with guidance
# (prompt encoding, the pipeline's own scheduler, VAE decode); and one forward of a UNet with the
# real SD 1.5 / SDXL base config and random weights at 32×32 latents, batch 1: diffusers makes the
# weights, saves them, and hfsky loads that same file and the same inputs (so the row also reports
# the relative error between the two outputs). Times are the fastest of REPEATS after a warm-up,
# model loading excluded. Ratio = hfsky time / diffusers time (below 1: hfsky is faster).
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${THREADS:-2}"
REPEATS="${REPEATS:-3}"
UNET_REPEATS="${UNET_REPEATS:-2}"
FULL="${FULL:-sd15 sdxl}"
[ "$FULL" = none ] && FULL=""
PY="${PYREF_PYTHON:-$(scripts/pyref-venv.sh)}"
export OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS" RAYON_NUM_THREADS="$THREADS"
export HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error DIFFUSERS_VERBOSITY=error PYTHONWARNINGS=ignore

echo "building the hfsky side (release)…" >&2
BENCH=$(cargo bench --bench diffusion_bench --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys; print([m["executable"] for m in map(json.loads, sys.stdin) if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="diffusion_bench" and m.get("executable")][-1])')
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }
ROWS=()
row() { # row LABEL PY_SECONDS RS_SECONDS [NOTE]
  ROWS+=("$(python3 -c 'import sys; l,p,r,n=sys.argv[1:5]; p,r=float(p),float(r); print(f"| {l} | {p:.3f} | {r:.3f} | {r/p:.2f} | {n} |")' "$1" "$2" "$3" "${4:-}")")
}

for name in tiny-sd15 tiny-sdxl; do
  echo "$name: 20 steps at 64×64…" >&2
  p=$("$PY" benches/diffusion_bench.py sample "tests/fixtures/$name" 20 64 "$REPEATS" | tail -1)
  r=$("$BENCH" sample "tests/fixtures/$name" 20 64 "$REPEATS" | tail -1)
  row "$name pipeline, 20 steps 64×64, CFG" "$(field "$p" run_s)" "$(field "$r" run_s)"
done

for kind in $FULL; do
  echo "$kind: full-size UNet, random weights, one forward at 32×32 latents…" >&2
  dir="$TMP/$kind"
  p=$("$PY" benches/diffusion_bench.py unet "$kind" "$dir" "$UNET_REPEATS" | tail -1)
  r=$("$BENCH" unet "$dir/config.json" "$dir/unet.safetensors" "$dir/inputs.safetensors" "$UNET_REPEATS" | tail -1)
  params=$(field "$p" params)
  err=$(field "$r" rel_error_vs_diffusers)
  row "$kind UNet ($((params / 1000000)) M params) forward, 32×32 latents, batch 1" "$(field "$p" forward_s)" "$(field "$r" forward_s)" \
    "rel. error vs diffusers $(printf '%.1e' "$err")"
  rm -rf "$dir"
done

torch=$("$PY" -c 'import torch, diffusers; print(f"torch {torch.__version__}, diffusers {diffusers.__version__}")')
echo
echo "CPU: $(python3 -c 'import platform; print(platform.processor() or platform.machine())') $(nproc) cores, $THREADS threads each; $torch; f32"
echo
echo "| what | diffusers s | hfsky s | hfsky/diffusers | note |"
echo "|---|--:|--:|--:|---|"
printf '%s\n' "${ROWS[@]}"
