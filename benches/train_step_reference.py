"""The reference side of benches/train_bench.sh: one DreamBooth LoRA training step in PyTorch
diffusers + peft, set up the way diffusers' train_dreambooth_lora(_sdxl).py does it, timed per step.

Latents' distributions and text embeddings are computed once before timing (as hfsky's trainer
caches them), so a timed step is what hfsky's `seconds` covers: sample the latent, noise + random
timestep + add_noise, UNet forward, MSE, backward, grad-norm clip (hfsky's default max_grad_norm 1.0,
as diffusers' scripts clip), AdamW step, zero_grad.

Prints one JSON line: {"model", "threads", "steps", "warmup", "median_ms", "loss"}.
"""

import argparse
import json
import os
import statistics
import time

import numpy as np
import torch
from diffusers import DiffusionPipeline
from peft import LoraConfig
from PIL import Image


def load_photo(path, res):
    # Resize the shorter side to res, then center crop, to [-1, 1] — hfsky's --center-crop.
    img = Image.open(path).convert("RGB")
    w, h = img.size
    s = res / min(w, h)
    img = img.resize((max(res, round(w * s)), max(res, round(h * s))), Image.BICUBIC)
    w, h = img.size
    left, top = (w - res) // 2, (h - res) // 2
    img = img.crop((left, top, left + res, top + res))
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 127.5 - 1.0)
    return x.permute(2, 0, 1).unsqueeze(0), (h, w, top, left)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--photos", required=True)
    ap.add_argument("--prompt", default="a photo of SKY")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resolution", type=int, default=None, help="default: the UNet's native size")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    pipe = DiffusionPipeline.from_pretrained(a.model, torch_dtype=torch.float32)
    xl = hasattr(pipe, "text_encoder_2")
    res = a.resolution or pipe.unet.config.sample_size * pipe.vae_scale_factor
    sched = pipe.scheduler
    vae_cfg = pipe.vae.config
    shift = getattr(vae_cfg, "shift_factor", None) or 0.0

    with torch.no_grad():
        examples = []
        for name in sorted(os.listdir(a.photos)):
            if not name.lower().endswith((".png", ".jpg", ".jpeg")):
                continue
            px, (h, w, top, left) = load_photo(os.path.join(a.photos, name), res)
            dist = pipe.vae.encode(px).latent_dist
            time_ids = torch.tensor([[h, w, top, left, res, res]], dtype=torch.float32)
            examples.append((dist, time_ids))
        if xl:
            # force_upcast: the SDXL VAE runs in f32 (it already is here), as the SDXL script does.
            seq, _, pooled, _ = pipe.encode_prompt(a.prompt, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=False)
        else:
            seq, _ = pipe.encode_prompt(a.prompt, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=False)
            pooled = None

    unet = pipe.unet
    del pipe
    unet.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=a.rank, lora_alpha=a.rank, init_lora_weights="gaussian",
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    unet.train()
    if a.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    params = [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
    n_t = sched.config.num_train_timesteps
    v_pred = sched.config.prediction_type == "v_prediction"

    times, loss_value = [], None
    for step in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        dist, time_ids = examples[step % len(examples)]
        latents = (dist.sample() - shift) * vae_cfg.scaling_factor
        noise = torch.randn_like(latents)
        t = torch.randint(0, n_t, (latents.shape[0],)).long()
        noisy = sched.add_noise(latents, noise, t)
        target = sched.get_velocity(latents, noise, t) if v_pred else noise
        added = {"text_embeds": pooled, "time_ids": time_ids} if xl else None
        pred = unet(noisy, t, seq, added_cond_kwargs=added, return_dict=False)[0]
        loss = torch.nn.functional.mse_loss(pred.float(), target.float(), reduction="mean")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()
        loss_value = loss.item()
        if step >= a.warmup:
            times.append(time.perf_counter() - t0)

    print(json.dumps({"model": os.path.basename(a.model.rstrip("/")), "threads": a.threads, "steps": a.steps,
                      "warmup": a.warmup, "median_ms": 1000 * statistics.median(times), "loss": loss_value}))


if __name__ == "__main__":
    main()
