"""The diffusers half of realsize_bench.sh's generation rows (not a test). Prints one JSON object.

  python render_reference.py PIPELINE_DIR STEPS SIZE DEVICE DTYPE OUT_DIR

Draws the initial latents the way a diffusers user gets them (torch.randn with
torch.Generator("cpu").manual_seed(0), f32, [1, 4, SIZE/8, SIZE/8]) and writes them to
OUT_DIR/latents.safetensors, so hfsky can start from the very same noise (`generate --latents`).
Then renders PROMPT/NEGATIVE at SIZE x SIZE with STEPS steps of the pipeline's own scheduler in
DTYPE (float32 | bfloat16 | float16) on DEVICE: one warm-up run, then one timed run, saved as
OUT_DIR/diffusers.png. With --compare A.png B.png instead, prints the pixel differences of two PNGs.
"""
import json
import os
import sys
import time

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

PROMPT = "a photo of the SKY river"
NEGATIVE = "blurry, low quality"


def render(dir_, steps, size, device, dtype, out_dir):
    from diffusers import DiffusionPipeline

    os.makedirs(out_dir, exist_ok=True)
    latents = torch.randn((1, 4, size // 8, size // 8), generator=torch.Generator("cpu").manual_seed(0), dtype=torch.float32)
    save_file({"latents": latents.contiguous()}, os.path.join(out_dir, "latents.safetensors"))
    t = time.perf_counter()
    pipe = DiffusionPipeline.from_pretrained(dir_, torch_dtype=getattr(torch, dtype), local_files_only=True).to(device)
    pipe.set_progress_bar_config(disable=True)
    load_s = time.perf_counter() - t
    xl = "XL" in type(pipe).__name__
    guidance = 5.0 if xl else 7.5

    def run():
        with torch.no_grad():
            image = pipe(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=steps, height=size, width=size,
                         guidance_scale=guidance, latents=latents.to(device, getattr(torch, dtype))).images[0]
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return image

    run()  # warm-up: kernel selection and caches are not the method's cost
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    image = run()
    run_s = time.perf_counter() - t
    image.save(os.path.join(out_dir, "diffusers.png"))
    peak = torch.cuda.max_memory_allocated() if device.startswith("cuda") else None
    return {"load_s": load_s, "run_s": run_s, "guidance": guidance, "peak_device_memory_bytes": peak}


def compare(a, b):
    x = np.asarray(Image.open(a).convert("RGB"), dtype=np.float64) / 255
    y = np.asarray(Image.open(b).convert("RGB"), dtype=np.float64) / 255
    if x.shape != y.shape:
        return {"error": f"shapes differ: {x.shape} vs {y.shape}"}
    d = np.abs(x - y)
    return {"mean_abs": float(d.mean()), "max_abs": float(d.max()),
            "rel_error": float(np.linalg.norm(x - y) / max(np.linalg.norm(y), 1e-12))}


if __name__ == "__main__":
    a = sys.argv[1:]
    if len(a) == 3 and a[0] == "--compare":
        print(json.dumps(compare(a[1], a[2])))
    elif len(a) == 6:
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        print(json.dumps(render(a[0], int(a[1]), int(a[2]), a[3], a[4], a[5])))
    else:
        sys.exit(__doc__)
