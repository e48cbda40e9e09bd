"""Reference draws from torch's CPU generator for tests/cli/torch_noise.rs.

Usage: torch_randn.py SPEC.json OUT.safetensors
SPEC: [{"name": str, "seed": int, "draws": [[shape...], ...], "dtype": "float32"}, ...]. Each
case seeds one `torch.Generator("cpu")` and calls `torch.randn(shape, generator=g, dtype=dtype)`
(float32 unless the case says otherwise) once per
shape, in order (as diffusers' prepare_latents and then each Euler ancestral step do). Writes
tensor "{name}.{i}" for the i-th draw, and prints the CPU capability torch dispatched to.
"""

import json
import sys

import torch
from safetensors.torch import save_file


def main() -> None:
    spec = json.load(open(sys.argv[1]))
    out = {}
    for case in spec:
        g = torch.Generator("cpu").manual_seed(case["seed"])
        for i, shape in enumerate(case["draws"]):
            dtype = getattr(torch, case.get("dtype", "float32"))
            out[f"{case['name']}.{i}"] = torch.randn(shape, generator=g, dtype=dtype).contiguous()
    save_file(out, sys.argv[2])
    print(json.dumps({"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(), "tensors": len(out)}))


if __name__ == "__main__":
    main()
