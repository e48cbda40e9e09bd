"""kohya sd-scripts' bucket rules, restated in Python with numpy for `hfsky` to be checked against.

Reads {"resolution": R, "step": S, "sizes": [[w, h], ...]} on stdin and prints
{"buckets": [[w, h] or null, ...]}: make_bucket_resolutions((R, R), R // 2, 2 R, S) (kohya's
library/model_util.py), then BucketManager.select_bucket's predefined path (numpy argmin over
aspect-ratio errors, the scale of the side the photo is narrower in, sides int(x + 0.5)), and
where that scale would upscale, select_bucket's bucket_no_upscale path. null: a side below the
minimum (or above the maximum) bucket side.
"""

import json
import math
import sys

import numpy as np


def make_bucket_resolutions(max_reso, min_size, max_size, divisible):
    max_width, max_height = max_reso
    max_area = max_width * max_height
    resos = set()
    width = int(math.sqrt(max_area) // divisible) * divisible
    resos.add((width, width))
    width = min_size
    while width <= max_size:
        height = min(max_size, int((max_area // width) // divisible) * divisible)
        if height >= min_size:
            resos.add((width, height))
            resos.add((height, width))
        width += divisible
    return sorted(resos)


def round_to_steps(x, step):
    x = int(x + 0.5)
    return x - x % step


def select(w, h, resos, ars, max_area, step, min_size, max_size):
    aspect_ratio = w / h
    reso = resos[np.abs(ars - aspect_ratio).argmin()]
    if aspect_ratio > reso[0] / reso[1]:
        scale = reso[1] / h
    else:
        scale = reso[0] / w
    if scale <= 1:
        return list(reso)
    if w * h > max_area:
        rw = math.sqrt(max_area * aspect_ratio)
        rh = max_area / rw
        bw = round_to_steps(rw, step)
        bh_in_w = round_to_steps(bw / aspect_ratio, step)
        ar_w = bw / bh_in_w
        bh = round_to_steps(rh, step)
        bw_in_h = round_to_steps(bh * aspect_ratio, step)
        ar_h = bw_in_h / bh
        if abs(ar_w - aspect_ratio) < abs(ar_h - aspect_ratio):
            size = (bw, int(bw / aspect_ratio + 0.5))
        else:
            size = (int(bh * aspect_ratio + 0.5), bh)
    else:
        size = (w, h)
    bucket = (size[0] - size[0] % step, size[1] - size[1] % step)
    if min(bucket) < min_size or max(bucket) > max_size:
        return None
    return list(bucket)


def main():
    q = json.load(sys.stdin)
    r, step = q["resolution"], q["step"]
    min_size = max(step, (r // 2) // step * step)
    max_size = max(step, (2 * r) // step * step)
    resos = make_bucket_resolutions((r, r), min_size, max_size, step)
    ars = np.array([a / b for a, b in resos])
    out = [select(w, h, resos, ars, r * r, step, min_size, max_size) for w, h in q["sizes"]]
    print(json.dumps({"buckets": out}))


if __name__ == "__main__":
    main()
