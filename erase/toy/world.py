"""The toy world: procedurally drawn, captioned images of coloured shapes in three styles.

Every training sample is a pure function of ``(world seed, sample id)``: sample ``i`` always has the
same colour, shape, style, jitter and caption. That is what lets a forget set name exactly which
images a model was trained on, and lets ``erase toy train --exclude`` retrain the ideal references
(a model that never saw a forget set, or never saw a whole concept).

Images are drawn at 4x and box-downsampled to 32 px so that edges are anti-aliased like a real
photo's, on a light, unsaturated background so that colour words keep their usual meaning.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from erase.errors import EraseError

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 215),
    "yellow": (235, 200, 30),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
STYLES: tuple[str, ...] = ("plain", "stripes", "outline")
AXES: dict[str, tuple[str, ...]] = {"color": tuple(COLORS), "shape": SHAPES, "style": STYLES}

IMAGE_SIZE = 32
_SUPERSAMPLE = 4

# Phrasings the UNet is trained on. "{st}" is only used for non-plain styles or when the caption
# names the style explicitly; a bare "a red circle" means the plain style, as a user would expect.
TRAIN_TEMPLATES: tuple[str, ...] = (
    "a {c} {s}",
    "{c} {s}",
    "the {c} {s}",
    "a photo of a {c} {s}",
)
# Phrasings kept away from the UNet: generation from these measures generalisation, not recall.
HELDOUT_TEMPLATES: tuple[str, ...] = (
    "a drawing of a {c} {s}",
    "{c} {s}, simple icon",
    "a picture of a {c} {s}",
)
STYLE_SUFFIX = " in {st} style"


def caption(color: str | None, shape: str | None, style: str | None, template: str) -> str:
    """Fill one phrasing; a missing colour or shape gives a partial caption ("a circle")."""
    if color is None and shape is None:
        return ""
    c = color or ""
    s = shape or "shape"
    text = " ".join(template.format(c=c, s=s).split())
    if style is not None:
        text += STYLE_SUFFIX.format(st=style)
    return text


@dataclass(frozen=True)
class Sample:
    """One training sample; ``render(sample)`` draws it."""

    id: int
    color: str
    shape: str
    style: str
    caption: str
    seed: int

    def concepts(self) -> dict[str, str]:
        return {"color": self.color, "shape": self.shape, "style": self.style}


@dataclass(frozen=True)
class World:
    """A seeded list of samples: balanced over the 48 combinations, caption drawn per sample.

    Attributes:
        seed: world seed; with the sample id it fixes everything about a sample.
        size: number of samples (ids ``0 .. size-1``).
    """

    seed: int = 0
    size: int = 4800

    def sample(self, i: int) -> Sample:
        if not 0 <= i < self.size:
            raise EraseError(f"sample id {i} is out of range: the toy world has ids 0..{self.size - 1}")
        ncomb = len(COLORS) * len(SHAPES) * len(STYLES)
        k = i % ncomb
        color = tuple(COLORS)[k % len(COLORS)]
        shape = SHAPES[(k // len(COLORS)) % len(SHAPES)]
        style = STYLES[k // (len(COLORS) * len(SHAPES))]
        rng = np.random.default_rng([self.seed, i, 1])
        template = TRAIN_TEMPLATES[rng.integers(len(TRAIN_TEMPLATES))]
        form = rng.random()
        # Most captions are full; some name only the shape or only the colour, so that anchor
        # prompts such as "a circle" (concept ablation, ESD's erase_from) mean something.
        if form < 0.85:
            named = (color, shape)
        elif form < 0.93:
            named = (None, shape)
        else:
            named = (color, None)
        # Plain is the default look: name it only sometimes; always name the other styles.
        say_style = style != "plain" or rng.random() < 0.3
        text = caption(*named, style if say_style else None, "a {c} {s}" if named[0] is None else template)
        return Sample(i, color, shape, style, text, self.seed)

    def samples(self, ids: Iterable[int] | None = None) -> list[Sample]:
        return [self.sample(i) for i in (range(self.size) if ids is None else ids)]


def parse_exclusion(spec: str) -> tuple[str, str]:
    """``"color=red"`` -> ``("color", "red")``, with an error naming what is allowed."""
    key, sep, value = spec.partition("=")
    key, value = key.strip(), value.strip()
    if not sep or key not in AXES:
        raise EraseError(f"exclusion {spec!r} must look like AXIS=VALUE with AXIS one of {', '.join(AXES)}")
    if value not in AXES[key]:
        raise EraseError(f"exclusion {spec!r}: {key} must be one of {', '.join(AXES[key])}")
    return key, value


def select(world: World, exclude: Sequence[str] = (), exclude_ids: Iterable[int] = ()) -> list[Sample]:
    """The samples left after removing every sample matching a concept exclusion or an id."""
    rules = [parse_exclusion(s) for s in exclude]
    dropped = set()
    for i in exclude_ids:
        world.sample(i)  # range check with a clear error
        dropped.add(int(i))
    kept = [
        s for s in world.samples() if s.id not in dropped and not any(s.concepts()[k] == v for k, v in rules)
    ]
    if not kept:
        raise EraseError("the exclusions remove every training sample; exclude less")
    return kept


def shape_outline(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    """The polygon of ``shape`` centred at (cx, cy) with half-size ``r``; None for the circle."""
    if shape == "circle":
        return None
    if shape == "square":
        h = r * 0.88
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + r * 0.95, cy + r * 0.75), (cx - r * 0.95, cy + r * 0.75)]
    w = r * 0.36
    return [
        (cx - w, cy - r),
        (cx + w, cy - r),
        (cx + w, cy - w),
        (cx + r, cy - w),
        (cx + r, cy + w),
        (cx + w, cy + w),
        (cx + w, cy + r),
        (cx - w, cy + r),
        (cx - w, cy + w),
        (cx - r, cy + w),
        (cx - r, cy - w),
        (cx - w, cy - w),
    ]


def shape_mask(shape: str, cx: float, cy: float, r: float, big: int, filled: bool = True) -> np.ndarray:
    """Boolean (big, big) mask of ``shape``: filled, or its outline as the ``outline`` style draws it."""
    outline = shape_outline(shape, cx, cy, r)
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    width = 0 if filled else max(2, round(big * 0.07))
    kw = {"fill": 255} if filled else {"outline": 255, "width": width}
    if outline is None:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], **kw)
    else:
        draw.polygon(outline, **kw)
    return np.asarray(mask) > 127


def render_spec(
    color: str, shape: str, style: str, rng: np.random.Generator, size: int = IMAGE_SIZE
) -> Image.Image:
    """Draw one image; all jitter (hue, position, scale, background) comes from ``rng``."""
    big = size * _SUPERSAMPLE
    bg = int(rng.integers(222, 246))
    tint = rng.integers(-4, 5, size=3)
    background = tuple(int(np.clip(bg + t, 0, 255)) for t in tint)
    fill = tuple(int(np.clip(v + rng.integers(-18, 19), 0, 255)) for v in COLORS[color])

    r = big * rng.uniform(0.24, 0.34)
    cx = big / 2 + rng.uniform(-0.12, 0.12) * big
    cy = big / 2 + rng.uniform(-0.12, 0.12) * big

    if shape not in SHAPES:
        raise EraseError(f"unknown shape {shape!r}; the toy world draws {', '.join(SHAPES)}")
    if style not in STYLES:
        raise EraseError(f"unknown style {style!r}; the toy world draws {', '.join(STYLES)}")

    def draw_mask(filled: bool) -> np.ndarray:
        return shape_mask(shape, cx, cy, r, big, filled=filled)

    if style == "plain":
        paint = draw_mask(filled=True)
    elif style == "outline":
        paint = draw_mask(filled=False)
    else:  # stripes: horizontal bands inside the shape, with its edge drawn so the shape stays legible
        period = big // 8
        bands = (np.arange(big)[:, None] // (period // 2)) % 2 == 0
        paint = draw_mask(filled=False) | (draw_mask(filled=True) & bands)

    canvas = np.empty((big, big, 3), dtype=np.uint8)
    canvas[:] = background
    canvas[paint] = fill
    return Image.fromarray(canvas).resize((size, size), Image.Resampling.BOX)


def render(sample: Sample) -> Image.Image:
    rng = np.random.default_rng([sample.seed, sample.id, 2])
    return render_spec(sample.color, sample.shape, sample.style, rng)


def render_batch(samples: Sequence[Sample]) -> np.ndarray:
    """uint8 array (N, 32, 32, 3)."""
    return np.stack([np.asarray(render(s)) for s in samples])
