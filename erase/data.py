"""Forget and retain sets: (image, caption) pairs from a folder, or named samples of the toy world.

A set is given as a folder of images with captions (``captions.txt`` or ``metadata.jsonl``), or,
in the toy world, as a spec that names training samples exactly, since the toy world's data is a
deterministic function of its seed and the sample id:

    toy:ids=0-31,40           these sample ids
    toy:ids=@forget.txt       ids listed in a file, one per line
    toy:color=red             every training sample of a concept (several filters are ANDed)
    toy:color=red:n=32        a random 32 of them (drawn from the run's seed)
    toy:rest:n=256            (retain only) 256 samples not in the forget set

The ids are kept with the set, so the untraining oracle for a forget set is the toy UNet retrained
without exactly those ids.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from erase.diffusion import Conditioning, encode_prompts
from erase.errors import EraseError
from erase.specs import parse_ids


@dataclass(frozen=True)
class ImageSet:
    """(image, prompt) pairs: a forget or retain set for data-level methods."""

    images: tuple  # PIL images
    prompts: tuple[str, ...]
    ids: tuple[int, ...] | None = None  # training-sample ids, when known (toy world)

    def __post_init__(self):
        if len(self.images) != len(self.prompts):
            raise EraseError(f"an image set has {len(self.images)} images but {len(self.prompts)} captions")


def load_image_folder(folder: str | Path, what: str = "image") -> ImageSet:
    """A folder of images with ``captions.txt`` (``FILENAME<TAB>CAPTION`` per line) or
    ``metadata.jsonl`` (``{"file_name": ..., "text": ...}`` per line, the diffusers convention)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EraseError(f"{what} folder {folder} does not exist; pass a folder of images with captions")
    pairs = []
    if (folder / "metadata.jsonl").is_file():
        for n, ln in enumerate((folder / "metadata.jsonl").read_text().splitlines(), 1):
            if ln.strip():
                try:
                    rec = json.loads(ln)
                except json.JSONDecodeError:
                    raise EraseError(f"{folder / 'metadata.jsonl'} line {n} is not JSON") from None
                pairs.append((rec.get("file_name"), rec.get("text")))
    elif (folder / "captions.txt").is_file():
        for ln in (folder / "captions.txt").read_text().splitlines():
            if ln.strip():
                name, _, text = ln.partition("\t")
                pairs.append((name.strip(), text.strip()))
    else:
        raise EraseError(
            f"{what} folder {folder} has no captions.txt or metadata.jsonl; write one caption per image"
        )
    if not pairs:
        raise EraseError(f"{what} folder {folder} lists no images; add (image, caption) lines")
    images, prompts = [], []
    for name, text in pairs:
        if not name or not text:
            raise EraseError(f"{what} folder {folder}: every line needs a file name and a caption")
        path = folder / name
        try:
            images.append(Image.open(path).convert("RGB"))
        except OSError:
            raise EraseError(f"{what} image {path} is missing or not an image") from None
        prompts.append(text)
    return ImageSet(tuple(images), tuple(prompts))


def toy_ids(spec: str, *, seed: int = 0, exclude: set[int] = frozenset(), world=None) -> list[int]:
    """The training-sample ids a ``toy:...`` spec names (see the module docstring)."""
    from erase.toy.world import AXES, World

    world = world or World()
    parts = [p.strip() for p in spec.split(":")[1:] if p.strip()]
    if not parts:
        raise EraseError(f"set {spec!r} names no samples; write e.g. toy:color=red:n=32 or toy:ids=0-31")
    ids: list[int] | None = None
    rest, n = False, None
    filters = {}
    for part in parts:
        key, sep, value = part.partition("=")
        if part == "rest":
            rest = True
        elif key == "ids" and sep:
            ids = parse_ids(value)
            for i in ids:
                world.sample(i)  # one line naming the valid range
        elif key == "n" and sep:
            try:
                n = int(value)
            except ValueError:
                n = -1
            if n <= 0:
                raise EraseError(f"set {spec!r}: n must be a positive integer")
        elif key in AXES and sep:
            if value not in AXES[key]:
                raise EraseError(f"set {spec!r}: {key} must be one of {', '.join(AXES[key])}")
            filters[key] = value
        else:
            raise EraseError(
                f"set {spec!r}: cannot read {part!r}; use ids=..., color=..., shape=..., style=..., n=..., rest"
            )
    chosen = ids if ids is not None else range(world.size)
    out = [
        i
        for i in chosen
        if i not in exclude and all(world.sample(i).concepts()[k] == v for k, v in filters.items())
    ]
    if not rest and ids is None and not filters:
        raise EraseError(f"set {spec!r} names no samples; add ids=..., a concept filter or rest")
    if not out:
        raise EraseError(f"set {spec!r} names no training sample; check its filters and ids")
    if n is not None and n < len(out):
        rng = np.random.default_rng([seed, 7])
        out = sorted(rng.choice(out, size=n, replace=False).tolist())
    return out


def toy_set(ids: list[int], world=None) -> ImageSet:
    from erase.toy.world import World, render

    world = world or World()
    samples = world.samples(ids)
    return ImageSet(tuple(render(s) for s in samples), tuple(s.caption for s in samples), tuple(ids))


def resolve_sets(forget: str, retain: str | None, *, seed: int = 0) -> tuple[ImageSet, ImageSet | None]:
    """Forget and retain sets from their specs; ``retain`` None means no retain set. A sample or
    (caption, image) pair named by both is only forgotten."""
    if not forget or not forget.strip():
        raise EraseError(
            "the forget set is empty; pass --forget FOLDER or a toy spec such as toy:color=red:n=32"
        )
    if forget.startswith("toy:"):
        f_ids = toy_ids(forget, seed=seed)
        f_set = toy_set(f_ids)
    else:
        f_set, f_ids = load_image_folder(forget, "forget"), []
    if retain is None:
        return f_set, None
    if retain.startswith("toy:"):
        if "rest" in retain.split(":") and not f_ids:
            raise EraseError("retain toy:rest needs a toy forget set; name the retain samples instead")
        named = toy_ids(retain, seed=seed + 1) if ":rest" not in retain else None
        if named is not None and f_ids and set(named) <= set(f_ids):
            raise EraseError(
                "the retain set lies entirely inside the forget set; retain other samples (e.g. toy:rest:n=256)"
            )
        # Forgetting wins: a retain spec never brings back a forget sample.
        r_ids = toy_ids(retain, seed=seed + 1, exclude=set(f_ids))
        r_set = toy_set(r_ids)
    else:
        r_set = load_image_folder(retain, "retain")
    # Forgetting wins for folders too: a (caption, image) pair in both sets is only forgotten.
    forgotten = set(zip(f_set.prompts, map(_digest, f_set.images)))
    keep = [
        i for i, pair in enumerate(zip(r_set.prompts, map(_digest, r_set.images))) if pair not in forgotten
    ]
    if not keep:
        raise EraseError("the retain set lies entirely inside the forget set; retain other images")
    if len(keep) < len(r_set.images):
        r_set = ImageSet(
            tuple(r_set.images[i] for i in keep),
            tuple(r_set.prompts[i] for i in keep),
            tuple(r_set.ids[i] for i in keep) if r_set.ids else None,
        )
    return f_set, r_set


def _digest(image: Image.Image) -> bytes:
    return np.asarray(image.convert("RGB")).tobytes()[:4096]


class EncodedSet:
    """Clean latents and text conditioning of (image, prompt) pairs, encoded once."""

    def __init__(self, latents: torch.Tensor, cond: Conditioning, prompts: tuple[str, ...]):
        self.latents, self.cond, self.prompts = latents, cond, prompts

    def __len__(self) -> int:
        return len(self.prompts)


@torch.no_grad()
def encode_set(pipe, pairs: ImageSet, what: str = "example") -> EncodedSet:
    """VAE latents (scaled as the UNet sees them) and text conditioning for (image, prompt) pairs."""
    if len(pairs.images) == 0:
        raise EraseError(f"no {what}s; give at least one (image, caption) pair")
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    proc = pipe.image_processor
    x = torch.cat([proc.preprocess(im.convert("RGB").resize((size, size))) for im in pairs.images])
    x = x.to(pipe.device, pipe.vae.dtype)
    latents = (
        torch.cat([pipe.vae.encode(x[i : i + 64]).latent_dist.mean for i in range(0, len(x), 64)])
        * pipe.vae.config.scaling_factor
    )
    return EncodedSet(latents, encode_prompts(pipe, list(pairs.prompts)), tuple(pairs.prompts))
