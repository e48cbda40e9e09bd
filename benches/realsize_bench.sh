#!/usr/bin/env bash
# Benchmark (not a test): hfsky against diffusers(+peft) at the real SD 1.5 / SDXL sizes, side by
# side in one run, same threads, same photos, same settings. Prints a Markdown table last.
#
# Pipelines: random weights in the real component configs (benches/realsize/<kind>/, verbatim from
# the public stable-diffusion-v1-5 and stable-diffusion-xl-base-1.0 repos), made once by
# benches/realsize/make_pipeline.py with the pinned Python reference stack and kept in $DIR.
# Rows (CASES, space-separated; default all):
#   sd15-256 sd15-512   DreamBooth LoRA training step (rank 4 on to_q,to_k,to_v,to_out.0, AdamW,
#                       batch 1, center crop, f32): median s/step after WARMUP steps, and the peak
#                       RSS of the whole training process (model loading and latent caching included)
#   sdxl-512-gc         the same for SDXL at 512 px with gradient checkpointing on both sides
#   sdxl-1024 sdxl-1024-gc   SDXL at 1024 px without / with checkpointing (GPU sizes)
#   unet                one SD 1.5 UNet forward at 32×32 latents (benches/diffusion_bench.*)
#   gen                 a whole 20-step 512 px SD 1.5 generation with CFG (DDIM), VAE decode included
#                       (the engine benchmark binary: needs cargo, CPU only)
#   sd15-gen-512 sdxl-gen-1024   the same through the `hfsky` binary on DEVICE in PRECISION (20 and 30
#                       steps, the pipeline's own scheduler): diffusers draws the initial latents with
#                       torch.Generator("cpu").manual_seed(0), hfsky renders from those very latents
#                       (`generate --latents`) and the two images are compared (parity), then hfsky
#                       renders two seeds and the second one's time (warm kernels) is the row
#   CASE+im2col         any hfsky-binary case above with the GPU convolutions as im2col + cuBLAS
#                       instead of cuDNN (HFSKY_GPU_CONV=im2col): the measurement behind cuDNN as default
#
#   THREADS=2 STEPS=3 WARMUP=1 CASES="sd15-256 unet" DIR=target/realsize benches/realsize_bench.sh
#   HFSKY=path/to/hfsky   PYTHON=python-with-torch-diffusers-peft   DEVICE=cpu|cuda   PRECISION=f32|bf16|f16
# Needs ~3 GB of disk for SD 1.5 and ~14 GB for SDXL in $DIR; SDXL rows need ~20 GB of RAM.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${THREADS:-$(nproc)}"
STEPS="${STEPS:-3}"
WARMUP="${WARMUP:-1}"
CASES="${CASES:-sd15-256 sd15-512 sdxl-512-gc unet gen}"
DIR="${DIR:-target/realsize}"
DEVICE="${DEVICE:-cpu}"
PRECISION="${PRECISION:-f32}"   # frozen weights on both sides: f32 | bf16 | f16 (LoRA factors stay f32)
case "$PRECISION" in f32) PY_DTYPE=float32 ;; bf16) PY_DTYPE=bfloat16 ;; f16) PY_DTYPE=float16 ;; *) echo "PRECISION: f32, bf16 or f16" >&2; exit 2 ;; esac
HFSKY="${HFSKY:-target/release/hfsky}"
PY="${PYTHON:-$(./scripts/pyref-venv.sh)}"
export OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS" RAYON_NUM_THREADS="$THREADS"
export HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error DIFFUSERS_VERBOSITY=error PYTHONWARNINGS=ignore
if [ "$HFSKY" = target/release/hfsky ]; then cargo build --release --locked >&2; fi
[ -x "$HFSKY" ] || { echo "no executable $HFSKY (cargo build --release, or set HFSKY)" >&2; exit 2; }

W="$(mktemp -d)"
trap 'rm -rf "$W"' EXIT
trap 'exit 130' INT TERM
mkdir -p "$DIR" "$W/photos"
# Four of the bundled sky photos (real JPEGs of several sizes), the same for both sides.
ls data/sky-photos/*.jpg | head -4 | xargs -I{} cp {} "$W/photos/"

pipeline() { # pipeline sd15|sdxl → prints its folder, making it once
  if [ ! -f "$DIR/$1/model_index.json" ]; then
    echo "making the random-weight $1 pipeline in $DIR/$1 (once)…" >&2
    "$PY" benches/realsize/make_pipeline.py "$1" "$DIR/$1" >&2
  fi
  echo "$DIR/$1"
}

peak_rss() { # peak_rss OUTFILE CMD… : runs CMD, writes its peak RSS (bytes, the largest of it and its children) to OUTFILE
  local out="$1"; shift
  "$PY" -c 'import resource, subprocess, sys
rc = subprocess.call(sys.argv[2:])
open(sys.argv[1], "w").write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024))
sys.exit(rc)' "$out" "$@"
}

median_after_warmup() {
  "$PY" -c 'import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
secs = [r["seconds"] for r in rows[int(sys.argv[2]):]]
print(statistics.median(secs))' "$1" "$WARMUP"
}

ROWS=()
SUFFIX=""   # appended to every row's label (the `+im2col` variants)
row() { # row LABEL REF HFSKY UNIT [NOTE]  (also printed at once to stderr: a run cut short keeps its rows)
  ROWS+=("$("$PY" -c 'import sys
l, p, r, unit, note = sys.argv[1:6]
p, r = float(p), float(r)
fmt = (lambda v: f"{v / 2**30:.2f} GiB") if unit == "bytes" else (lambda v: f"{v:.2f} s")
print(f"| {l} | {fmt(r)} | {fmt(p)} | {r / p:.2f}× | {note} |")' "$1$SUFFIX" "$2" "$3" "$4" "${5:-}")")
  echo "row: ${ROWS[-1]}" >&2
}

train_case() { # train_case LABEL KIND RES [gc]
  local label="$1" kind="$2" res="$3" gc="${4:-}" dir out
  dir="$(pipeline "$kind")"
  out="$W/train-$label"
  local hf_gc=() py_gc=()
  # Explicit both ways: hfsky's default (auto) would decide by free memory. Square centre crops
  # (no buckets) as the reference script does.
  hf_gc=(--gradient-checkpointing false)
  if [ -n "$gc" ]; then hf_gc=(--gradient-checkpointing true); py_gc=(--gradient-checkpointing); fi
  echo "$label: hfsky…" >&2
  peak_rss "$W/rss-hfsky-$label" "$HFSKY" -q train --cache-dir "$W/cache-$label" --base-model "$dir" --dataset "$W/photos" \
    --instance-prompt "a photo of SKY" --output-dir "$out" --max-steps "$((STEPS + WARMUP))" --resolution "$res" --center-crop --bucketing false \
    --rank 4 --target-modules to_q,to_k,to_v,to_out.0 --precision "$PRECISION" --device "$DEVICE" --train-batch-size 1 "${hf_gc[@]}" \
    > "$W/hfsky-$label.log" 2>&1 || { echo "hfsky train failed ($label):" >&2; tail -20 "$W/hfsky-$label.log" >&2; exit 1; }
  local rs; rs=$(median_after_warmup "$out/training_log.jsonl")
  echo "$label: diffusers + peft…" >&2
  peak_rss "$W/rss-py-$label" "$PY" benches/train_step_reference.py --model "$dir" --photos "$W/photos" --steps "$STEPS" \
    --warmup "$WARMUP" --threads "$THREADS" --resolution "$res" --device "$DEVICE" --dtype "$PY_DTYPE" "${py_gc[@]}" > "$W/py-$label.json" 2> "$W/py-$label.log" \
    || { echo "reference failed ($label):" >&2; tail -20 "$W/py-$label.log" >&2; exit 1; }
  local py; py=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["median_ms"] / 1000)' "$W/py-$label.json")
  local gcn=""; [ -n "$gc" ] && gcn=", gradient checkpointing"
  row "$kind $res px training step$gcn" "$py" "$rs" s
  row "$kind $res px training peak RSS$gcn" "$(cat "$W/rss-py-$label")" "$(cat "$W/rss-hfsky-$label")" bytes
  # hfsky's preflight estimate of a step against what the step used (device memory on a GPU,
  # the whole process's peak RSS on the CPU, which also holds the loading and caching phases).
  local summary="$out/training_summary.json" measured
  if [ "$DEVICE" = cuda ]; then
    measured=$(jfield "$summary" peak_device_memory_bytes)
    row "$kind $res px peak GPU memory$gcn" "$(jfield "$W/py-$label.json" peak_device_memory_bytes)" "$measured" bytes \
      "diffusers: torch.cuda.max_memory_allocated; hfsky: in use after each backward"
  else
    measured=$(cat "$W/rss-hfsky-$label")
  fi
  row "$kind $res px hfsky step estimate$gcn" "$measured" "$(jfield "$summary" estimated_step_memory_bytes)" bytes "estimate / measured"
}
jfield() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }

gen_case() { # gen_case LABEL KIND RES STEPS
  local label="$1" kind="$2" res="$3" steps="$4" dir out
  dir="$(pipeline "$kind")"
  out="$W/gen-$label"
  echo "$label: diffusers…" >&2
  "$PY" benches/render_reference.py "$dir" "$steps" "$res" "$DEVICE" "$PY_DTYPE" "$out" > "$W/py-$label.json" 2> "$W/py-$label.log" \
    || { echo "reference failed ($label):" >&2; tail -20 "$W/py-$label.log" >&2; exit 1; }
  local guidance; guidance=$(jfield "$W/py-$label.json" guidance)
  local common=(--model "$dir" --prompt "a photo of the SKY river" --negative "blurry, low quality" --steps "$steps"
    --width "$res" --height "$res" --guidance "$guidance" --dtype "$PRECISION")
  echo "$label: hfsky…" >&2
  "$HFSKY" --json generate "${common[@]}" --latents "$out/latents.safetensors" --out "$out/hfsky" > "$W/hf-$label.json" 2> "$W/hf-$label.log" \
    || { echo "hfsky generate failed ($label):" >&2; tail -20 "$W/hf-$label.log" >&2; exit 1; }
  "$HFSKY" --json generate "${common[@]}" --seeds 0,1 --out "$out/hfsky-timed" > "$W/hf-timed-$label.json" 2>> "$W/hf-$label.log" \
    || { echo "hfsky generate failed ($label):" >&2; tail -20 "$W/hf-$label.log" >&2; exit 1; }
  local hs; hs=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["images"][1]["seconds"])' "$W/hf-timed-$label.json")
  local parity; parity=$("$PY" benches/render_reference.py --compare "$out/hfsky/latents.png" "$out/diffusers.png")
  row "$kind $steps-step $res px generation, CFG, VAE decode" "$(jfield "$W/py-$label.json" run_s)" "$hs" s \
    "same latents: mean \|Δ\| $(field "$parity" mean_abs | awk '{printf "%.4f", $1}'), max $(field "$parity" max_abs | awk '{printf "%.3f", $1}'), rel. error $(field "$parity" rel_error | awk '{printf "%.1e", $1}')"
}

BENCH=""
bench_bin() {
  if [ -z "$BENCH" ]; then
    BENCH=$(cargo bench --bench diffusion_bench --no-run --message-format=json 2>/dev/null |
      python3 -c 'import json,sys; print([m["executable"] for m in map(json.loads, sys.stdin) if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="diffusion_bench" and m.get("executable")][-1])')
  fi
  echo "$BENCH"
}
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }

CONV_BEFORE="${HFSKY_GPU_CONV-}"
for c in $CASES; do
  base="${c%+im2col}"
  if [ "$base" != "$c" ]; then
    export HFSKY_GPU_CONV=im2col SUFFIX=" (GPU convolutions: im2col + cuBLAS, no cuDNN)"
  else
    export HFSKY_GPU_CONV="$CONV_BEFORE"; SUFFIX=""
  fi
  case "$base" in
    sd15-256) train_case "$c" sd15 256 ;;
    sd15-512) train_case "$c" sd15 512 ;;
    sdxl-512-gc) train_case "$c" sdxl 512 gc ;;
    sdxl-1024) train_case "$c" sdxl 1024 ;;
    sdxl-1024-gc) train_case "$c" sdxl 1024 gc ;;
    sd15-gen-512) gen_case "$c" sd15 512 20 ;;
    sdxl-gen-1024) gen_case "$c" sdxl 1024 30 ;;
    unet)
      echo "unet: SD 1.5 forward at 32×32 latents…" >&2
      b=$(bench_bin)
      p=$("$PY" benches/diffusion_bench.py unet sd15 "$W/unet" 2 | tail -1)
      r=$("$b" unet "$W/unet/config.json" "$W/unet/unet.safetensors" "$W/unet/inputs.safetensors" 2 | tail -1)
      row "sd15 UNet forward, 32×32 latents, batch 1" "$(field "$p" forward_s)" "$(field "$r" forward_s)" s \
        "rel. error vs diffusers $(printf '%.1e' "$(field "$r" rel_error_vs_diffusers)")"
      rm -rf "$W/unet" ;;
    gen)
      echo "gen: SD 1.5 20 steps at 512 px with CFG…" >&2
      b=$(bench_bin); dir="$(pipeline sd15)"
      p=$("$PY" benches/diffusion_bench.py sample "$dir" 20 512 1 | tail -1)
      r=$("$b" sample "$dir" 20 512 1 | tail -1)
      row "sd15 20-step 512 px generation, CFG, VAE decode" "$(field "$p" run_s)" "$(field "$r" run_s)" s ;;
    *) echo "unknown case $c" >&2; exit 2 ;;
  esac
done

VERS="$("$PY" -c 'import torch, diffusers, peft; print(f"torch {torch.__version__}, diffusers {diffusers.__version__}, peft {peft.__version__}")')"
echo
echo "$(date -u +%Y-%m-%d), $DEVICE, $(nproc) cores, $THREADS threads each side, $PRECISION frozen weights, batch 1, $STEPS steps after $WARMUP warm-up; $VERS."
echo
echo "| same run | hfsky | diffusers (+peft) | hfsky / diffusers | |"
echo "|---|--:|--:|--:|---|"
printf "%s\n" "${ROWS[@]}"
