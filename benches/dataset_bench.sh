#!/usr/bin/env bash
# Benchmark (not a test). `hfsky dataset check` and `hfsky dataset report` over generated
# 1024×768 JPEG sky photos: images per second and peak memory (GNU time's max RSS), printed as
# a markdown table.
#   BENCH_IMAGES=1000 (default)  HFSKY=target/debug/hfsky (default; the dev profile builds
#   dependencies at opt-level 3, so this is what `cargo build` users run; set
#   HFSKY=target/release/hfsky to measure a release build)
set -euo pipefail
cd "$(dirname "$0")/.."
N="${BENCH_IMAGES:-1000}"
HFSKY="${HFSKY:-target/debug/hfsky}"
if [ ! -x "$HFSKY" ] && [ "$HFSKY" = target/debug/hfsky ]; then cargo build --locked; fi
[ -x "$HFSKY" ] || { echo "no executable $HFSKY (cargo build, or set HFSKY)" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "need GNU time at /usr/bin/time (apt-get install time)" >&2; exit 2; }

W="$(mktemp -d)"
trap 'rm -rf "$W"' EXIT
"$HFSKY" dataset synth "$W/photos" --count "$N" --width 1024 --height 768 >/dev/null

measure() { # name, command...
  local name="$1"; shift
  local start end
  start=$(date +%s.%N)
  /usr/bin/time -f "%M" -o "$W/rss" "$@" >/dev/null 2>"$W/err" || { [ "$name" = check ] || { cat "$W/err" >&2; exit 1; }; }
  end=$(date +%s.%N)
  awk -v n="$N" -v s="$start" -v e="$end" -v rss="$(tail -1 "$W/rss")" -v name="$name" \
    'BEGIN { t = e - s; printf "| %s | %d | %.1f | %.1f | %.0f |\n", name, n, t, n / t, rss / 1024 }'
}

echo "hfsky: $HFSKY, $(nproc) cores, $N photos of 1024×768"
echo
echo "| command | images | seconds | images/s | peak RSS (MiB) |"
echo "|---|---|---|---|---|"
measure check "$HFSKY" dataset check "$W/photos" --json
measure report "$HFSKY" dataset report "$W/photos" --out "$W/report"
