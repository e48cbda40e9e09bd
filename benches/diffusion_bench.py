"""The PyTorch diffusers half of benches/diffusion_bench.sh (not a test). Prints one JSON object per call.

  python diffusion_bench.py sample PIPELINE_DIR STEPS SIZE REPEATS
      a whole text-to-image run (prompt encoding with CFG, STEPS steps of the pipeline's own scheduler at
      SIZE x SIZE, VAE decode); one warm-up run, then the fastest of REPEATS
  python diffusion_bench.py unet sd15|sdxl OUT_DIR REPEATS
      a UNet2DConditionModel with the real SD 1.5 / SDXL base config and random weights (seed 0): writes
      OUT_DIR/config.json, OUT_DIR/unet.safetensors and OUT_DIR/inputs.safetensors (sample at 32x32 latents,
      batch 1, with diffusers' output as `out`) for hfsky to load, and times one forward

Threads: torch uses OMP_NUM_THREADS (the script sets it equal to hfsky's RAYON_NUM_THREADS).
"""
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "realsize"))
from make_pipeline import save_safetensors  # noqa: E402  (tensor by tensor: an f32 SDXL UNet is 10 GB)

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

PROMPT = "a photo of the SKY river"
NEGATIVE = "blurry, low quality"

# The unet/config.json of runwayml/stable-diffusion-v1-5 and stabilityai/stable-diffusion-xl-base-1.0
# (fields at diffusers defaults left out).
CONFIGS = {
    "sd15": dict(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=[320, 640, 1280, 1280],
        down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32, norm_eps=1e-5, flip_sin_to_cos=True,
        freq_shift=0, act_fn="silu", downsample_padding=1, mid_block_scale_factor=1, center_input_sample=False),
    "sdxl": dict(
        sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=[320, 640, 1280],
        down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        transformer_layers_per_block=[1, 2, 10], attention_head_dim=[5, 10, 20], cross_attention_dim=2048,
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816, norm_num_groups=32, norm_eps=1e-5, flip_sin_to_cos=True,
        freq_shift=0, act_fn="silu", downsample_padding=1, mid_block_scale_factor=1, center_input_sample=False),
}


def fastest(repeats, f):
    out = f()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        out = f()
        best = min(best, time.perf_counter() - t)
    return best, out


def sample(dir_, steps, size, repeats):
    from diffusers import DiffusionPipeline
    t = time.perf_counter()
    pipe = DiffusionPipeline.from_pretrained(dir_, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    load_s = time.perf_counter() - t
    xl = "XL" in type(pipe).__name__
    guidance = 5.0 if xl else 7.5

    def run():
        with torch.no_grad():
            return pipe(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=steps, height=size, width=size,
                        guidance_scale=guidance, generator=torch.Generator().manual_seed(0), output_type="pt").images

    secs, image = fastest(repeats, run)
    return {"load_s": load_s, "run_s": secs, "image_shape": list(image.shape)}


def unet(kind, out_dir, repeats):
    from diffusers import UNet2DConditionModel
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(0)
    t = time.perf_counter()
    model = UNet2DConditionModel(**CONFIGS[kind]).eval()
    init_s = time.perf_counter() - t
    save_safetensors(model.state_dict(), os.path.join(out_dir, "unet.safetensors"))
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump({"_class_name": "UNet2DConditionModel", **CONFIGS[kind]}, f, indent=1)
    g = torch.Generator().manual_seed(1)
    cfg = CONFIGS[kind]
    x = {"sample": torch.randn((1, 4, 32, 32), generator=g), "timesteps": torch.tensor([500], dtype=torch.int64),
         "encoder_hidden_states": torch.randn((1, 77, cfg["cross_attention_dim"]), generator=g)}
    kw = {}
    if kind == "sdxl":
        x["text_embeds"] = torch.randn((1, 1280), generator=g)
        x["time_ids"] = torch.tensor([[256.0, 256.0, 0.0, 0.0, 256.0, 256.0]])
        kw["added_cond_kwargs"] = {"text_embeds": x["text_embeds"], "time_ids": x["time_ids"]}

    def run():
        with torch.no_grad():
            return model(x["sample"], x["timesteps"], x["encoder_hidden_states"], **kw).sample

    secs, out = fastest(repeats, run)
    x["out"] = out
    save_safetensors(x, os.path.join(out_dir, "inputs.safetensors"))
    return {"init_s": init_s, "forward_s": secs, "params": sum(p.numel() for p in model.parameters())}


if __name__ == "__main__":
    a = sys.argv[1:]
    if a and a[0] == "sample" and len(a) == 5:
        r = sample(a[1], int(a[2]), int(a[3]), int(a[4]))
    elif a and a[0] == "unet" and len(a) == 4:
        r = unet(a[1], a[2], int(a[3]))
    else:
        sys.exit(__doc__)
    print(json.dumps(r))
