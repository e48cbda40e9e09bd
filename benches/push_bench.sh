#!/usr/bin/env bash
# Benchmark (not a test). Prints a markdown table:
#  (a) pushing one large random file to `hfsky hub serve` on loopback with `hfsky push` and with
#      huggingface_hub.upload_folder (HF_HUB_DISABLE_XET=1, i.e. the LFS batch/multipart path), in
#      the same run against the same server; end-to-end process wall time (repo creation included);
#  (b) sha256 throughput on the same file: `hfsky hash FILE` vs `sha256sum` (page cache warm).
# Each tool pushes its own random file to its own repo, so nothing is deduplicated.
#   BENCH_SIZE_MB=2048 (default, MiB)  HFSKY=target/release/hfsky  PYTHON=.venv/bin/python
# Needs ~4x BENCH_SIZE_MB of free space under ${TMPDIR:-/tmp}.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB="${BENCH_SIZE_MB:-2048}"
HFSKY="${HFSKY:-target/release/hfsky}"
PY="${PYTHON:-.venv/bin/python}"
if [ ! -x "$HFSKY" ] && [ "$HFSKY" = target/release/hfsky ]; then cargo build --release --locked; fi
[ -x "$HFSKY" ] || { echo "no executable $HFSKY (cargo build --release, or set HFSKY)" >&2; exit 2; }
"$PY" -c "import huggingface_hub" 2>/dev/null \
  || { echo "need huggingface_hub in $PY (python3 -m venv .venv && .venv/bin/pip install huggingface_hub)" >&2; exit 2; }

W="$(mktemp -d)"
SERVER=""
cleanup() {
  if [ -n "$SERVER" ]; then kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; fi
  rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$W/hfsky" "$W/python"
head -c "$((SIZE_MB * 1024 * 1024))" /dev/urandom > "$W/hfsky/big.bin"
head -c "$((SIZE_MB * 1024 * 1024))" /dev/urandom > "$W/python/big.bin"

TOKEN="hf_bench$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
"$HFSKY" hub serve --root "$W/hub" --port 0 --token "bench:write:$TOKEN" > "$W/serve.log" 2>&1 &
SERVER=$!
EP=""
for _ in $(seq 100); do
  EP="$(sed -n 's/^Offline Hub listening on \(http:[^ ]*\)$/\1/p' "$W/serve.log" 2>/dev/null | head -1)"
  [ -n "$EP" ] && break
  kill -0 "$SERVER" 2>/dev/null || break
  sleep 0.1
done
[ -n "$EP" ] || { echo "hfsky hub serve did not start:" >&2; cat "$W/serve.log" >&2; exit 1; }

now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.6f\", $1 }"; }

# (a) push: hfsky, then huggingface_hub, each to its own repo on the same server.
t0=$(now)
HF_HOME="$W/hf-home-hfsky" HF_TOKEN="$TOKEN" "$HFSKY" --endpoint "$EP" -q push "$W/hfsky" --repo bench/hfsky --message bench
t1=$(now)
env -u HF_TOKEN HF_HOME="$W/hf-home-python" HF_ENDPOINT="$EP" HF_HUB_DISABLE_XET=1 HF_HUB_DISABLE_PROGRESS_BARS=1 \
  HF_HUB_DISABLE_TELEMETRY=1 "$PY" - "$EP" "$TOKEN" "$W/python" <<'PY'
import sys
from huggingface_hub import HfApi
api = HfApi(endpoint=sys.argv[1], token=sys.argv[2])
api.create_repo("bench/python", exist_ok=True)
api.upload_folder(repo_id="bench/python", folder_path=sys.argv[3], commit_message="bench")
PY
t2=$(now)

# (b) sha256 of the same file, page cache warm for both.
F="$W/hfsky/big.bin"
cat "$F" > /dev/null
t3=$(now)
H1="$("$HFSKY" hash "$F" | awk '{print $1}')"
t4=$(now)
H2="$(sha256sum "$F" | awk '{print $1}')"
t5=$(now)
[ "$H1" = "$H2" ] || { echo "hash mismatch: hfsky $H1, sha256sum $H2" >&2; exit 1; }

push_rs=$(calc "$t1 - $t0"); push_py=$(calc "$t2 - $t1")
hash_rs=$(calc "$t4 - $t3"); hash_c=$(calc "$t5 - $t4")
row() { printf "| %-44s | %9.2f | %9.1f |\n" "$1" "$2" "$(calc "$SIZE_MB / $2")"; }
PYVER="$("$PY" -c 'import huggingface_hub; print(huggingface_hub.__version__)')"

echo
echo "One ${SIZE_MB} MiB random file, \`hfsky hub serve\` on loopback, $(nproc) cores; huggingface_hub ${PYVER}."
echo
echo "| what | wall s | MiB/s |"
echo "|---|--:|--:|"
row "push: hfsky push" "$push_rs"
row "push: huggingface_hub upload_folder (no Xet)" "$push_py"
row "sha256: hfsky hash" "$hash_rs"
row "sha256: sha256sum" "$hash_c"
echo
printf "push: hfsky is %.2fx huggingface_hub's speed; sha256: hfsky is %.2fx sha256sum's speed.\n" \
  "$(calc "$push_py / $push_rs")" "$(calc "$hash_c / $hash_rs")"
