#!/usr/bin/env bash
# Benchmark (not a test): pushing one large file to `hfsky hub serve` on loopback with hfsky and
# with huggingface_hub.upload_folder (HF_HUB_DISABLE_XET=1, the LFS path), in the same run and
# against the same server; and sha256 throughput of hfsky against sha256sum on the same file.
# Each tool pushes its own random file to its own repo, so neither benefits from dedup.
#   BENCH_SIZE_MB=2048 (default)  HFSKY=target/release/hfsky  PYTHON=.venv/bin/python
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB="${BENCH_SIZE_MB:-2048}"
HFSKY="${HFSKY:-target/release/hfsky}"
PY="${PYTHON:-.venv/bin/python}"
[ -x "$HFSKY" ] || cargo build --release --locked
"$PY" -c "import huggingface_hub" 2>/dev/null || { echo "need huggingface_hub in $PY (./scripts/test.sh makes .venv)"; exit 2; }

W="$(mktemp -d)"
SERVER=""
cleanup() { [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
mkdir -p "$W/hfsky" "$W/python"
head -c "$((SIZE_MB * 1024 * 1024))" /dev/urandom > "$W/hfsky/big.bin"
head -c "$((SIZE_MB * 1024 * 1024))" /dev/urandom > "$W/python/big.bin"

TOKEN="hf_bench$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
"$HFSKY" hub serve --root "$W/hub" --port 0 --token "bench:write:$TOKEN" > "$W/serve.log" &
SERVER=$!
for _ in $(seq 100); do grep -q listening "$W/serve.log" 2>/dev/null && break; sleep 0.1; done
EP="$(awk '/listening/ {print $NF}' "$W/serve.log")"

now() { date +%s.%N; }
secs() { echo "$2 - $1" | bc -l; }

t0=$(now)
HF_HOME="$W/hf1" HF_TOKEN="$TOKEN" "$HFSKY" --endpoint "$EP" -q push "$W/hfsky" --repo bench/hfsky
t1=$(now)
HF_HOME="$W/hf2" HF_HUB_DISABLE_XET=1 HF_HUB_DISABLE_PROGRESS_BARS=1 "$PY" - "$EP" "$TOKEN" "$W/python" <<'PY'
import sys
from huggingface_hub import HfApi
api = HfApi(endpoint=sys.argv[1], token=sys.argv[2])
api.create_repo("bench/python", exist_ok=True)
api.upload_folder(repo_id="bench/python", folder_path=sys.argv[3], commit_message="bench")
PY
t2=$(now)
"$HFSKY" hash "$W/hfsky/big.bin" > /dev/null
t3=$(now)
sha256sum "$W/hfsky/big.bin" > /dev/null
t4=$(now)

push_rs=$(secs "$t0" "$t1"); push_py=$(secs "$t1" "$t2")
hash_rs=$(secs "$t2" "$t3"); hash_c=$(secs "$t3" "$t4")
row() { printf "| %-44s | %8.2f s | %8.0f MB/s |\n" "$1" "$2" "$(echo "$SIZE_MB / $2" | bc -l)"; }
echo
echo "push of a ${SIZE_MB} MB file to hfsky hub serve on loopback ($(nproc) cores)"
echo
echo "| what | time | throughput |"
echo "|---|---|---|"
row "hfsky push" "$push_rs"
row "huggingface_hub.upload_folder (no Xet)" "$push_py"
row "sha256: hfsky hash" "$hash_rs"
row "sha256: sha256sum" "$hash_c"
echo
printf "push: hfsky is %.2fx the speed of huggingface_hub; sha256: hfsky is %.2fx sha256sum\n" \
  "$(echo "$push_py / $push_rs" | bc -l)" "$(echo "$hash_c / $hash_rs" | bc -l)"
