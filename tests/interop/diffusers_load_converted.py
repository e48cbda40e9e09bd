"""Load LoRA files that `hfsky lora convert` wrote (the same LoRA as PEFT and as kohya keys) into
a diffusers pipeline with load_lora_weights, as users do, and report: what diffusers/peft warned
about (unexpected, missing, unmatched keys), how many LoRA layers each file made in the UNet and
text encoders, and how far apart the two files' UNet and text-encoder outputs are.
Prints one JSON object.

usage: diffusers_load_converted.py PIPELINE_DIR FILE [FILE...]
"""
import json
import logging
import os
import sys

import torch
from diffusers import DiffusionPipeline
from diffusers.utils import logging as dlogging

pipeline_dir, files = sys.argv[1], sys.argv[2:]

messages = []


class Capture(logging.Handler):
    def emit(self, record):
        messages.append(record.getMessage())


dlogging.set_verbosity_warning()
dlogging.get_logger("diffusers").addHandler(Capture())
logging.getLogger("peft").addHandler(Capture())


def outputs(pipe):
    unet, cfg = pipe.unet, pipe.unet.config
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
    ids = torch.arange(2, 12).unsqueeze(0)
    with torch.no_grad():
        out = {"unet": unet(sample, torch.tensor([500]), ctx, **kwargs).sample}
        for name in ("text_encoder", "text_encoder_2"):
            te = getattr(pipe, name, None)
            if te is not None:
                out[name] = te(ids).last_hidden_state
    return out


def layers(module):
    return 0 if module is None else sum(1 for n, _ in module.named_modules() if n.endswith("lora_A"))


base = outputs(DiffusionPipeline.from_pretrained(pipeline_dir, torch_dtype=torch.float32))
results = []
for f in files:
    messages.clear()
    pipe = DiffusionPipeline.from_pretrained(pipeline_dir, torch_dtype=torch.float32)
    pipe.load_lora_weights(os.path.dirname(f), weight_name=os.path.basename(f))
    results.append({
        "file": f,
        # "No LoRA keys associated to CLIPTextModel…" is expected when a file has no text-encoder part.
        "warnings": [
            m for m in messages
            if any(w in m.lower() for w in ("unexpected", "missing", "not found", "were not used", "not compatible", "filter out")) and "No LoRA keys associated" not in m
        ],
        "lora_layers": {n: layers(getattr(pipe, n, None)) for n in ("unet", "text_encoder", "text_encoder_2")},
        # (rank, alpha) of the adapter each component got, as peft read it.
        "config": {
            n: [(c.r, c.lora_alpha) for c in getattr(getattr(pipe, n, None), "peft_config", {}).values()]
            for n in ("unet", "text_encoder", "text_encoder_2")
        },
        "use_dora": any(c.use_dora for c in getattr(pipe.unet, "peft_config", {}).values()),
        "outputs": outputs(pipe),
    })

first = results[0]["outputs"]
print(json.dumps({
    "files": [{k: v for k, v in r.items() if k != "outputs"} for r in results],
    # Largest |a − b| between the first file's outputs and each other's, per component.
    "max_abs_diff": [{k: float((r["outputs"][k] - first[k]).abs().max()) for k in first} for r in results[1:]],
    # How much the LoRA moves each output (relative), so a no-op cannot pass.
    "relative_change": {k: float((first[k] - base[k]).norm() / base[k].norm()) for k in first},
}))
