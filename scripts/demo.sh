#!/usr/bin/env bash
# The whole publishing flow with nothing from the internet: an offline Hub on loopback, a
# throw-away token, login → push the bundled sky photos in one commit → push again (nothing
# to do) → download into a Hugging Face cache → check every byte. Your real login and cache
# are not touched (HF_HOME points into a temp folder).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --locked
HFSKY="$PWD/target/debug/hfsky"
WORK="$(mktemp -d)"
export HF_HOME="$WORK/hf-home"
unset HF_TOKEN HUGGING_FACE_HUB_TOKEN HF_ENDPOINT || true
TOKEN="hf_demo$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')"

"$HFSKY" hub serve --root "$WORK/hub" --port 0 --token "demo:write:$TOKEN" > "$WORK/serve.log" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 50); do grep -q listening "$WORK/serve.log" 2>/dev/null && break; sleep 0.1; done
ENDPOINT="$(awk '/listening/ {print $NF}' "$WORK/serve.log")"
export HF_ENDPOINT="$ENDPOINT"
echo "== offline Hub at $ENDPOINT (data in a temp folder)"

echo "== hfsky login (token piped on stdin, kept in a 0600 file for this demo; the default is the OS keyring)"
printf '%s' "$TOKEN" | "$HFSKY" login --token-stdin --store file --name demo
echo "== hfsky whoami"
"$HFSKY" whoami
echo "== hfsky push data/sky-photos --repo demo/sky-photos"
"$HFSKY" push data/sky-photos --repo demo/sky-photos -m "Add 11 sky photos"
echo "== the same push again"
"$HFSKY" push data/sky-photos --repo demo/sky-photos
echo "== hfsky download demo/sky-photos (into \$HF_HOME/hub, the cache huggingface_hub reads)"
"$HFSKY" download demo/sky-photos --json > "$WORK/dl.json"
SNAP="$(ls -d "$HF_HOME"/hub/models--demo--sky-photos/snapshots/*)"
for f in data/sky-photos/*; do cmp "$f" "$SNAP/$(basename "$f")"; done
echo "all $(ls data/sky-photos | wc -l) files downloaded byte-identical into $SNAP"
echo "== hfsky logout"
"$HFSKY" logout
