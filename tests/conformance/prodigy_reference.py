"""Prodigy reference trajectories from prodigyopt (PyPI prodigyopt==1.1.2) for hfsky's tests.

Three tensors descend a weighted quadratic, grad = w * (p - t): one starts at zero (as a LoRA's B
factor does, which prodigyopt stores as a scalar p0), one gets no gradient for its first steps
(its state starts late). The learning rate warms up linearly, as hfsky's schedules do. Each case
toggles weight decay, bias correction and safeguard warmup (and beta1 = 0, d_coef, growth_rate).

    python tests/conformance/prodigy_reference.py [OUT.json]

writes the cases with prodigyopt's parameters and d after every step (default:
tests/fixtures/prodigy-reference.json, which src/train/prodigy.rs's tests read; the ignored
`prodigy_matches_prodigyopt` CLI test reruns this against the installed prodigyopt).
"""

import json
import math
import sys

import torch
from prodigyopt import Prodigy

STEPS = 20
LR = 1.0
WARMUP = 4

CASES = [
    ("defaults", {}),
    ("weight_decay", {"weight_decay": 0.01}),
    ("bias_correction", {"use_bias_correction": True}),
    ("safeguard_warmup", {"safeguard_warmup": True}),
    ("all_on", {"weight_decay": 0.01, "use_bias_correction": True, "safeguard_warmup": True, "d_coef": 2.0}),
    ("beta1_zero_growth", {"beta1": 0.0, "growth_rate": 1.5, "eps": 1e-6}),
]


def tensors():
    g = torch.Generator().manual_seed(1234)
    shapes = [6, 5, 4]
    init = [torch.randn(n, generator=g) for n in shapes]
    init[2] = torch.zeros(shapes[2])
    target = [torch.randn(n, generator=g) * 2 for n in shapes]
    weight = [torch.rand(n, generator=g) * 1.5 + 0.25 for n in shapes]
    return init, target, weight


def run(settings, spec=None):
    init, target, weight = tensors()
    if spec is not None:
        init = [torch.tensor(v) for v in spec["init"]]
        target = [torch.tensor(v) for v in spec["target"]]
        weight = [torch.tensor(v) for v in spec["weight"]]
    first_grad = [0, 3, 0]
    params = [torch.nn.Parameter(p.clone()) for p in init]
    kwargs = dict(lr=LR, betas=(settings.get("beta1", 0.9), settings.get("beta2", 0.999)))
    for k in ["eps", "weight_decay", "d_coef", "growth_rate", "use_bias_correction", "safeguard_warmup", "beta3", "d0"]:
        if k in settings:
            kwargs[k] = settings[k]
    opt = Prodigy(params, **kwargs)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / WARMUP))
    out_params, out_d = [], []
    for step in range(STEPS):
        for i, p in enumerate(params):
            p.grad = (weight[i] * (p.detach() - target[i])) if step >= first_grad[i] else None
        opt.step()
        sched.step()
        out_params.append([p.detach().tolist() for p in params])
        out_d.append(opt.param_groups[0]["d"])
    return {
        "settings": settings,
        "lr": LR,
        "warmup": WARMUP,
        "steps": STEPS,
        "init": [p.tolist() for p in init],
        "target": [t.tolist() for t in target],
        "weight": [w.tolist() for w in weight],
        "first_grad": first_grad,
        "params": out_params,
        "d": out_d,
    }


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/prodigy-reference.json"
    torch.set_default_dtype(torch.float32)
    cases = []
    for name, settings in CASES:
        case = run(settings)
        case["name"] = name
        cases.append(case)
    with open(out, "w") as f:
        json.dump(cases, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
