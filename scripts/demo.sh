#!/usr/bin/env bash
# The main job with nothing from the internet and no GPU: an offline Hub on loopback, a
# throw-away token, login → publish a tiny SD 1.5 pipeline (tests/fixtures, random weights) as
# the base model → `hfsky train-and-push` a DreamBooth LoRA on the bundled sky photos (model
# card, validation image, one commit) → generate with base + LoRA pulled from the Hub → push
# and download the photos byte for byte. Your real login and cache are not touched (HF_HOME
# points into a temp folder). HFSKY=/path/to/hfsky runs an installed binary (a wheel's, say)
# instead of building this checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${HFSKY:-}" ]; then
  cargo build --quiet --locked
  HFSKY="$PWD/target/debug/hfsky"
fi
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
echo "== publish the base model: hfsky push tests/fixtures/tiny-sd15 --repo demo/tiny-sd15"
"$HFSKY" push tests/fixtures/tiny-sd15 --repo demo/tiny-sd15 -m "Tiny random-weight SD 1.5 pipeline"
echo "== hfsky train-and-push: DreamBooth LoRA on data/sky-photos, base model from the Hub"
cat > "$WORK/train.yaml" <<YAML
base_model: demo/tiny-sd15
dataset: $PWD/data/sky-photos
instance_prompt: "a photo of SKY"
captions: instance
resolution: 64
random_flip: true
rank: 4
learning_rate: 1.0e-3
max_steps: 30
checkpointing_steps: 10
validation_prompt: "a photo of SKY river"
num_validation_images: 2
validation_inference_steps: 10
output_dir: $WORK/sky-lora
YAML
"$HFSKY" train-and-push --config "$WORK/train.yaml" --repo demo/sky-lora
echo "== the model card's metadata"
sed -n '1,/^---$/{p}' "$WORK/sky-lora/README.md" | sed -n '2,40p' | sed '/^---$/q'
echo "== hfsky generate with base + LoRA, both pulled from the offline Hub"
"$HFSKY" generate --model demo/tiny-sd15 --lora demo/sky-lora --prompt "a photo of SKY river" --steps 10 --seeds 0..2 --out "$WORK/images"
echo "== hfsky compare: the same prompt locally and through the offline Hub's inference route (the Hub"
echo "   worker's defaults: Euler Ancestral, 20 steps, f16, LoRA fused), with ablations that name the cause"
# Kept after the demo (everything else lives in a temp dir): open it in a browser.
"$HFSKY" compare --prompt "a photo of SKY river" --repo demo/sky-lora --seeds 2 --explain --out "${DEMO_OUT:-demo-output}/compare"
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
