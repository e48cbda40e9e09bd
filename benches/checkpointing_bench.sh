#!/usr/bin/env bash
# What gradient checkpointing costs in time and saves in memory: LoRA training steps (rank 4 on
# to_q/to_k/to_v/to_out.0, AdamW) of a UNet with the real SD 1.5 / SDXL layout and random weights,
# dense and checkpointed, each in its own process, in one run. Prints a Markdown table.
#
#   benches/checkpointing_bench.sh                      CPU: SD 1.5 layout at 1/2 width, 256 px, batch 1
#   RUNS="sd15:1:512:1 sdxl:1:1024:1" DEVICE=cuda benches/checkpointing_bench.sh   (build with CUDA:
#       CARGO_FEATURES=cuda)
#
# RUNS: ARCH:SCALE:RES:BATCH entries (SCALE divides the channel widths). STEPS steps per run; the
# first is a warm-up and not timed. Memory on the CPU: peak RSS added by the steps (VmHWM after the
# model is built); on CUDA: the peak of nvidia-smi's memory.used sampled every 10 ms, above the
# level before the process started (bf16 weights there).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-sd15:2:256:1}"
STEPS="${STEPS:-3}"
DEVICE="${DEVICE:-cpu}"
FEATURES=()
[ -n "${CARGO_FEATURES:-}" ] && FEATURES=(--features "$CARGO_FEATURES")

echo "building the bench (release)…" >&2
BENCH=$(cargo bench "${FEATURES[@]}" --bench checkpointing_bench --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys; print([m["executable"] for m in map(json.loads, sys.stdin) if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="checkpointing_bench" and m.get("executable")][-1])')

gpu_used() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1; }

run() { # run ARCH SCALE RES BATCH MODE → JSON line (plus gpu_peak_mib on CUDA)
  if [ "$DEVICE" = cuda ]; then
    local before log
    before=$(gpu_used)
    log=$(mktemp)
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 10 >"$log" &
    local sampler=$!
    local out
    out=$("$BENCH" "$1" "$2" "$3" "$4" "$STEPS" "$5" cuda)
    kill "$sampler"
    wait "$sampler" 2>/dev/null || true
    python3 -c 'import json,sys; d=json.loads(sys.argv[1]); v=[int(l) for l in open(sys.argv[2]) if l.strip().isdigit()]; d["gpu_peak_mib"]=max(v)-int(sys.argv[3]); print(json.dumps(d))' "$out" "$log" "$before"
    rm -f "$log"
  else
    "$BENCH" "$1" "$2" "$3" "$4" "$STEPS" "$5" cpu
  fi
}

echo "| UNet (random weights) | px | batch | device | dense s/step | checkpointed s/step | time × | dense peak MiB | checkpointed peak MiB | saved |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for r in $RUNS; do
  IFS=: read -r arch scale res batch <<<"$r"
  echo "$arch (1/$scale width) at ${res}px: dense…" >&2
  dense=$(run "$arch" "$scale" "$res" "$batch" dense)
  echo "…checkpointed" >&2
  ckpt=$(run "$arch" "$scale" "$res" "$batch" checkpointed)
  python3 - "$dense" "$ckpt" "$DEVICE" <<'EOF'
import json, sys
d, c, dev = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
key = "gpu_peak_mib" if dev == "cuda" else "peak_rss_added_mib"
width = "full" if d["scale"] == 1 else f"1/{d['scale']}"
print(f"| {d['arch']} ({width} width) | {d['res']} | {d['batch']} | {dev} | {d['step_s']:.2f} | {c['step_s']:.2f} | "
      f"{c['step_s'] / d['step_s']:.2f} | {d[key]:.0f} | {c[key]:.0f} | {1 - c[key] / d[key]:.0%} |")
if abs(d["loss"] - c["loss"]) > 1e-3 * abs(d["loss"]):
    print(f"WARNING: final losses differ: dense {d['loss']} vs checkpointed {c['loss']}", file=sys.stderr)
EOF
done
