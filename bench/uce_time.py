"""UCE's closed-form edit time on the real SD 1.5 architecture (random weights, no download).

python bench/uce_time.py            # prints seconds for the edit, and for one UNet forward as a yardstick
"""

from __future__ import annotations

import json
import time

import torch
from common import sd15_pipeline

from erase.methods.base import EraseInputs
from erase.unlearn import run_method


def main():
    torch.set_num_threads(2)
    pipe = sd15_pipeline()
    pipe.set_progress_bar_config(disable=True)
    inputs = EraseInputs(
        targets=("a painting by van gogh", "art by van gogh"),
        anchors=("a painting", "art"),
        preserve=("a painting by claude monet", "a painting by pablo picasso", "a photo of a dog"),
    )
    with torch.no_grad():
        x = torch.randn(1, 4, 32, 32)
        c = torch.randn(1, 77, 768)
        t0 = time.perf_counter()
        pipe.unet(x, torch.tensor([500]), c)
        forward = time.perf_counter() - t0
    out = run_method(pipe, "uce", inputs, seed=0, progress=False)
    result = {
        "model": "SD 1.5 UNet architecture, random weights, CPU, 2 threads",
        "uce_edit_seconds": round(out.seconds, 2),
        "edited_tensors": len(out.params),
        "edited_parameters": out.log["trainable_parameters"],
        "one_unet_forward_256px_seconds": round(forward, 2),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
