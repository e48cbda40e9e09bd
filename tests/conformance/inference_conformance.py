"""What huggingface_hub makes of the offline Hub's inference provider mappings.

Reads `model_info(expand=["inferenceProviderMapping"])` and, for `auto` and every listed
provider, the request huggingface_hub's provider helper would send for text-to-image; prints one
JSON line for tests/cli/python_conformance.rs to compare with hfsky's own client.
"""
import argparse
import json
import os

ap = argparse.ArgumentParser()
ap.add_argument("--endpoint", required=True)
ap.add_argument("--token", required=True)
ap.add_argument("--repo", required=True)
args = ap.parse_args()

# huggingface_hub reads these at import time.
os.environ["HF_ENDPOINT"] = args.endpoint
os.environ["HF_TOKEN"] = args.token
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

from huggingface_hub import HfApi  # noqa: E402
from huggingface_hub.inference._providers import get_provider_helper  # noqa: E402

info = HfApi(endpoint=args.endpoint, token=args.token).model_info(args.repo, expand=["inferenceProviderMapping"])
mappings = [
    {
        "provider": m.provider,
        "providerId": m.provider_id,
        "status": m.status,
        "task": m.task,
        "adapter": m.adapter,
        "adapterWeightsPath": m.adapter_weights_path,
        "type": m.type,
    }
    for m in info.inference_provider_mapping or []
]
parameters = {
    "negative_prompt": "blurry",
    "height": 64,
    "width": 64,
    "num_inference_steps": 4,
    "guidance_scale": 5.0,
    "scheduler": None,
    "seed": 3,
}
requests = {}
for choice in ["auto"] + [m["provider"] for m in mappings]:
    helper = get_provider_helper(choice, task="text-to-image", model=args.repo)
    rp = helper.prepare_request(
        inputs="a photo of the SKY river", parameters=parameters, headers={}, model=args.repo, api_key=args.token
    )
    prefer = {k.lower(): v for k, v in rp.headers.items() if k.lower() == "prefer"}
    requests[choice] = {"provider": helper.provider, "url": rp.url, "json": rp.json, "headers": prefer}
print(json.dumps({"mappings": mappings, "requests": requests}))
