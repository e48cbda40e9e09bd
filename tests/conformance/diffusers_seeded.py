"""diffusers' own seeded render, for tests/cli/torch_noise.rs: a whole pipeline run from
`generator=torch.Generator("cpu").manual_seed(seed)`, the way the Hub's diffusers worker seeds.

Usage: diffusers_seeded.py MODEL_DIR OUT_DIR --seeds 0,1 --steps 6 --guidance 5 --width 64 --height 64
         [--negative TEXT] [--prompt TEXT] [--lora FILE]
Swaps in EulerAncestralDiscreteScheduler from the pipeline's scheduler config and, with --lora,
loads and fuses the LoRA (load_lora_weights then fuse_lora, as the worker does); renders in
float32 on the CPU and writes OUT_DIR/seed-{seed}.png (diffusers' numpy_to_pil rounding).
"""

import argparse
import json
import os

import torch
from diffusers import DiffusionPipeline, EulerAncestralDiscreteScheduler


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("out")
    p.add_argument("--seeds", required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--guidance", type=float, required=True)
    p.add_argument("--width", type=int, required=True)
    p.add_argument("--height", type=int, required=True)
    p.add_argument("--prompt", default="a photo of the SKY river")
    p.add_argument("--negative", default="blurry, low quality")
    p.add_argument("--lora")
    a = p.parse_args()
    pipe = DiffusionPipeline.from_pretrained(a.model, torch_dtype=torch.float32, local_files_only=True)
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    if a.lora:
        pipe.load_lora_weights(os.path.dirname(a.lora), weight_name=os.path.basename(a.lora))
        pipe.fuse_lora()
    os.makedirs(a.out, exist_ok=True)
    files = []
    for seed in (int(s) for s in a.seeds.split(",")):
        image = pipe(
            a.prompt,
            negative_prompt=a.negative,
            num_inference_steps=a.steps,
            guidance_scale=a.guidance,
            width=a.width,
            height=a.height,
            generator=torch.Generator("cpu").manual_seed(seed),
        ).images[0]
        path = os.path.join(a.out, f"seed-{seed}.png")
        image.save(path)
        files.append(path)
    print(json.dumps({"images": files, "scheduler": type(pipe.scheduler).__name__}))


if __name__ == "__main__":
    main()
