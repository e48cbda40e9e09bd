"""Random-weight pipelines with the real SD 1.5 / SDXL base component configs, for benches/realsize_bench.sh.

  python make_pipeline.py sd15|sdxl OUT_DIR

The configs are the files in benches/realsize/<kind>/, copied verbatim from the public
stable-diffusion-v1-5 and stable-diffusion-xl-base-1.0 repos. Each component is built by diffusers /
transformers from its config (their own random init, seed 0) and written in the diffusers layout,
f32, one safetensors file per component (written tensor by tensor: the SDXL UNet is 10 GB in f32 and
`save_file` would copy it whole into memory first). The tokenizer is the tiny test tokenizer
(tests/fixtures/tiny-sd15/tokenizer): ids are valid for the real 49408-entry embedding, and a real
vocabulary changes nothing about cost. SD 1.5's shipped PNDMScheduler is replaced by DDIMScheduler
built from the same config (hfsky does not implement PNDM); the noise schedule is the same.
Nothing is done if OUT_DIR/model_index.json exists already.
"""
import json
import os
import shutil
import struct
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def save_safetensors(tensors, path):
    header, offset = {}, 0
    for name, t in tensors.items():
        n = t.numel() * t.element_size()
        header[name] = {"dtype": {torch.float32: "F32", torch.int64: "I64"}[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    tmp = path + ".partial"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for t in tensors.values():
            f.write(t.detach().contiguous().numpy().tobytes())
    os.replace(tmp, path)


def read(kind, rel):
    with open(os.path.join(HERE, kind, rel)) as f:
        return json.load(f)


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)


def main(kind, out):
    if os.path.exists(os.path.join(out, "model_index.json")):
        return
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    os.makedirs(out, exist_ok=True)
    index = read(kind, "model_index.json")
    for name in ("safety_checker", "feature_extractor"):
        if name in index:
            index[name] = [None, None]
    if "requires_safety_checker" in index:
        index["requires_safety_checker"] = False

    def component(name, model, file):
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        save_safetensors(model.state_dict(), os.path.join(d, file))
        print(f"{kind}/{name}: {sum(p.numel() for p in model.parameters()) / 1e6:.0f} M parameters", file=sys.stderr)

    for name, entry in read(kind, "model_index.json").items():
        if name.startswith("_") or not isinstance(entry, list) or name in ("safety_checker", "feature_extractor"):
            continue
        cls = entry[1]
        if name == "unet":
            cfg = read(kind, "unet/config.json")
            component(name, UNet2DConditionModel.from_config(cfg), "diffusion_pytorch_model.safetensors")
            write_json(os.path.join(out, name, "config.json"), cfg)
        elif name == "vae":
            cfg = read(kind, "vae/config.json")
            component(name, AutoencoderKL.from_config(cfg), "diffusion_pytorch_model.safetensors")
            write_json(os.path.join(out, name, "config.json"), cfg)
        elif name.startswith("text_encoder"):
            cfg = read(kind, f"{name}/config.json")
            model_cls = CLIPTextModelWithProjection if cls == "CLIPTextModelWithProjection" else CLIPTextModel
            component(name, model_cls(CLIPTextConfig(**cfg)), "model.safetensors")
            write_json(os.path.join(out, name, "config.json"), cfg)
        elif name.startswith("tokenizer"):
            shutil.copytree(os.path.join(ROOT, "tests/fixtures/tiny-sd15/tokenizer"), os.path.join(out, name), dirs_exist_ok=True)
        elif name == "scheduler":
            cfg = read(kind, "scheduler/scheduler_config.json")
            if cfg["_class_name"] == "PNDMScheduler":
                DDIMScheduler.from_config(cfg).save_config(os.path.join(out, name))
                index["scheduler"] = ["diffusers", "DDIMScheduler"]
            else:
                write_json(os.path.join(out, name, "scheduler_config.json"), cfg)
    write_json(os.path.join(out, "model_index.json"), index)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("sd15", "sdxl"):
        sys.exit(__doc__)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    main(sys.argv[1], sys.argv[2])
