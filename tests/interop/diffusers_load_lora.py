"""Load an hfsky-trained LoRA into a diffusers pipeline the way users do (load_lora_weights) and
report what diffusers/peft made of it: unexpected or missing keys, the adapter config it read, and
how much the UNet output moves. Prints one JSON object.

usage: diffusers_load_lora.py PIPELINE_DIR LORA_DIR
"""
import json
import logging
import sys

import torch
from diffusers import DiffusionPipeline
from diffusers.utils import logging as dlogging

pipeline_dir, lora_dir = sys.argv[1], sys.argv[2]
torch.manual_seed(0)

messages = []


class Capture(logging.Handler):
    def emit(self, record):
        messages.append(record.getMessage())


dlogging.set_verbosity_warning()
dlogging.get_logger("diffusers").addHandler(Capture())
logging.getLogger("peft").addHandler(Capture())

pipe = DiffusionPipeline.from_pretrained(pipeline_dir, torch_dtype=torch.float32)
unet = pipe.unet
cfg = unet.config
g = torch.Generator().manual_seed(0)
sample = torch.randn(1, cfg.in_channels, cfg.sample_size, cfg.sample_size, generator=g)
ctx = torch.randn(1, 77, cfg.cross_attention_dim, generator=g)
kwargs = {}
if cfg.addition_embed_type == "text_time":
    pooled_dim = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
    kwargs["added_cond_kwargs"] = {
        "text_embeds": torch.randn(1, pooled_dim, generator=g),
        "time_ids": torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]]),
    }
t = torch.tensor([500])
with torch.no_grad():
    before = unet(sample, t, ctx, **kwargs).sample

pipe.load_lora_weights(lora_dir, weight_name="pytorch_lora_weights.safetensors")
with torch.no_grad():
    after = unet(sample, t, ctx, **kwargs).sample

peft_cfg = next(iter(unet.peft_config.values()))
lora_layers = sum(1 for n, _ in unet.named_modules() if n.endswith("lora_A"))
print(json.dumps({
    # Text-encoder "no LoRA keys" notes are expected: hfsky trains the UNet only.
    "warnings": [
        m for m in messages
        if any(w in m.lower() for w in ("unexpected", "missing", "no lora", "not found")) and "CLIPTextModel" not in m
    ],
    "rank": peft_cfg.r,
    "alpha": peft_cfg.lora_alpha,
    "target_modules": sorted(peft_cfg.target_modules),
    "lora_layers": lora_layers,
    "relative_change": float((after - before).norm() / before.norm()),
}))
