"""Generation with per-image seeds, so an image depends on (prompt, seed), never on batching.

Audit grids compare base, erased and relearned models cell by cell: the same (prompt, seed) must
give the same starting noise in every column, which one generator per image guarantees.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from erase import distributed
from erase.errors import EraseError
from erase.tokens import check_pipeline_prompts


def check_seeds(seeds: Sequence[int]) -> list[int]:
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise EraseError("no seeds given; pass at least one, e.g. --seeds 0,1,2")
    if any(s < 0 for s in seeds):
        raise EraseError(f"seeds must be non-negative integers, got {min(seeds)}")
    return seeds


def check_prompts(prompts: Sequence[str]) -> list[str]:
    prompts = [p.strip() for p in prompts]
    if not prompts or any(not p for p in prompts):
        raise EraseError("the prompt list is empty or holds an empty prompt; give at least one prompt")
    return prompts


@torch.no_grad()
def generate(
    pipe,
    prompts: Sequence[str],
    seeds: Sequence[int],
    *,
    steps: int = 25,
    guidance: float = 7.5,
    batch_size: int = 32,
    progress: bool = True,
    split: bool = False,
) -> list[Image.Image]:
    """One image per (prompt, seed), prompt-major: ``[(p0,s0), (p0,s1), ..., (p1,s0), ...]``.

    ``split``: under ``accelerate launch`` with several processes, each process makes a share of
    the batches and every process returns the full list. Whole batches are shared, so each image
    is computed exactly as a single process computes it and the result does not depend on the
    number of processes; with few batches some processes idle (lower ``batch_size``).
    """
    prompts, seeds = check_prompts(prompts), check_seeds(seeds)
    jobs = [(p, s) for p in prompts for s in seeds]
    return generate_pairs(
        pipe, jobs, steps=steps, guidance=guidance, batch_size=batch_size, progress=progress, split=split
    )


@torch.no_grad()
def generate_pairs(
    pipe,
    jobs: Sequence[tuple[str, int]],
    *,
    steps: int = 25,
    guidance: float = 7.5,
    batch_size: int = 32,
    progress: bool = True,
    split: bool = False,
) -> list[Image.Image]:
    """One image per ``(prompt, seed)`` pair, in the order given (``generate`` for any set of pairs,
    such as the ones an image cache is missing); ``split`` as in ``generate``."""
    if not jobs:
        return []
    jobs = list(zip(check_prompts([p for p, _ in jobs]), check_seeds([s for _, s in jobs])))
    check_pipeline_prompts(pipe, list(dict.fromkeys(p for p, _ in jobs)))
    if steps <= 0:
        raise EraseError(f"steps must be positive, got {steps}")
    if batch_size <= 0:
        raise EraseError(f"batch size must be positive, got {batch_size}")
    batches = [jobs[i : i + batch_size] for i in range(0, len(jobs), batch_size)]
    if split:
        batches = distributed.share(batches)
        progress = progress and distributed.is_main()
    images: list[Image.Image] = []
    for chunk in tqdm(batches, desc="generate", disable=not progress, leave=False):
        out = pipe(
            [p for p, _ in chunk],
            num_inference_steps=steps,
            guidance_scale=guidance,
            # CPU generators: the starting noise of a seed is the same on every device.
            generator=[torch.Generator("cpu").manual_seed(s) for _, s in chunk],
            output_type="pil",
        )
        images.extend(out.images)
    return distributed.gather(images) if split else images


def grid(
    images: Sequence[Image.Image], cols: int, *, labels: Sequence[str] | None = None, cell: int | None = None
) -> Image.Image:
    """Tile images row-major; small images are enlarged (nearest) so a person can see them."""
    if not images:
        raise EraseError("no images to put in a grid")
    w, h = images[0].size
    scale = max(1, math.ceil((cell or 96) / w))
    cw, ch = w * scale, h * scale
    rows = math.ceil(len(images) / cols)
    pad = 14 if labels else 0
    canvas = Image.new("RGB", (cols * cw, rows * (ch + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    for k, im in enumerate(images):
        r, c = divmod(k, cols)
        canvas.paste(im.resize((cw, ch), Image.Resampling.NEAREST), (c * cw, r * (ch + pad) + pad))
        if labels:
            draw.text((c * cw + 2, r * (ch + pad) + 1), labels[k][: cw // 6], fill="black")
    return canvas


def to_array(images: Sequence[Image.Image]) -> np.ndarray:
    return np.stack([np.asarray(im.convert("RGB")) for im in images])
