"""Read the shape off a toy image by fitting the renderer's own shapes to it, or say that none fits.

The toy CLIP judge (``erase.score``) must name one of a group's labels for every image: a blob that
an attack brought out of an erased model is called whichever shape it resembles most. This reader
knows how the world draws (``erase.toy.world.shape_mask``): it separates the drawn pixels from the
background, fills outlines and closes stripes, and compares the mask with every shape the renderer
can draw over a grid of sizes and positions (intersection over union). The best-fitting shape is
the reading when its fit reaches ``min_iou``; below it the image shows no shape of the world.

It reads shapes only (the toy world's colours and styles are left to the CLIP judge) and only
images of this world: a judge for the toy's efficacy claims, not for real models. Jobs use it as
the judge ``toy-fit`` (``erase.judges.fit``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

from erase.toy.world import IMAGE_SIZE, SHAPES, shape_mask

NONE = "none"
# The smallest fit that counts as a shape. Chosen on tuning image seeds by the rule in
# bench/fit_judge_tuning.py (written before it ran): the value that best agrees with the CLIP
# judge on the base model's own drawings of the four shapes, where that judge is on its home
# ground (docs/results/fit_judge_tuning.json).
MIN_IOU = 0.70
# A pixel is drawn when it differs from the background (the border's median) by more than this,
# on its most different channel; the renderer's backgrounds vary by a few levels only.
INK = 40.0
_SIZES = np.linspace(0.16, 0.40, 13)  # half-size / image size; the renderer draws 0.24-0.34
_OFFSETS = np.linspace(-0.18, 0.18, 10)  # centre offsets / image size; the renderer draws +-0.12


@dataclass(frozen=True)
class Reading:
    shape: str  # one of the world's shapes, or "none"
    fit: float  # the best shape's intersection over union
    fits: dict[str, float]  # every shape's best fit


@lru_cache(maxsize=1)
def templates() -> dict[str, np.ndarray]:
    """Each shape drawn filled over the grid of sizes and positions: (n, 32, 32) coverage in [0, 1]."""
    big = IMAGE_SIZE * 4
    out = {}
    for shape in SHAPES:
        masks = []
        for size in _SIZES:
            for dx in _OFFSETS:
                for dy in _OFFSETS:
                    m = shape_mask(shape, big / 2 + dx * big, big / 2 + dy * big, size * big, big)
                    masks.append(m.reshape(IMAGE_SIZE, 4, IMAGE_SIZE, 4).mean((1, 3)))
        out[shape] = np.stack(masks).astype(np.float32)
    return out


def drawn(image: Image.Image) -> np.ndarray:
    """Boolean mask of the drawn pixels, outlines filled and stripes closed."""
    a = np.asarray(
        image.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX), dtype=np.float32
    )
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    mask = np.abs(a - np.median(border, axis=0)).max(-1) > INK
    # Stripes: bands two pixels apart, closed vertically; then any hole (an outline's inside).
    closed = (
        mask | (np.roll(mask, 1, 0) & np.roll(mask, -1, 0)) | (np.roll(mask, 2, 0) & np.roll(mask, -2, 0))
    )
    return _fill_holes(closed)


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Pixels not reachable from the border through undrawn pixels are inside the shape."""
    outside = np.zeros_like(mask)
    outside[0], outside[-1], outside[:, 0], outside[:, -1] = ~mask[0], ~mask[-1], ~mask[:, 0], ~mask[:, -1]
    while True:
        grown = outside.copy()
        grown[1:] |= outside[:-1]
        grown[:-1] |= outside[1:]
        grown[:, 1:] |= outside[:, :-1]
        grown[:, :-1] |= outside[:, 1:]
        grown &= ~mask
        if (grown == outside).all():
            return ~outside
        outside = grown


def read(image: Image.Image, min_iou: float = MIN_IOU) -> Reading:
    mask = drawn(image).astype(np.float32)
    fits = {}
    for shape, t in templates().items():
        inter = np.minimum(mask[None], t).sum((1, 2))
        union = np.maximum(mask[None], t).sum((1, 2))
        fits[shape] = float((inter / np.maximum(union, 1e-6)).max())
    best = max(fits, key=fits.get)
    return Reading(best if fits[best] >= min_iou else NONE, fits[best], fits)
