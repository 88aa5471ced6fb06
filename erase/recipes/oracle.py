"""Computed oracles: the toy UNet retrained without a forget set or without a whole concept.

Seed 000/001's two problems have two ideal answers, and only a world small enough to retrain can
compute them: the **untraining** oracle ``A(D minus S)`` (trained without the forget samples S) and
the **unlearning** oracle ``A(D minus S_full)`` (trained without every sample of the concept). Both
are the bundled recipe (``erase.recipes.train``) with the same seed and steps; only the UNet's data
differ, the VAE and text encoder are the bundled ones. An oracle is stored as a delta on the
bundled toy holding every UNet tensor, so ``toy+ORACLE`` loads it wherever a model is accepted, and
``erase relearn ORACLE`` attacks it like any erasure.

Oracles are cached by their exclusion: shipped ones under ``erase/recipes/oracles/``, built ones under
``$ERASE_CACHE/oracles`` (default ``~/.cache/erase/oracles``).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from erase.errors import EraseError
from erase.toy import WEIGHTS

SHIPPED = WEIGHTS.parent / "oracles"


def cache_root() -> Path:
    return Path(os.environ.get("ERASE_CACHE", Path.home() / ".cache" / "erase")) / "oracles"


def oracle_key(exclude: Sequence[str] = (), ids: Sequence[int] = ()) -> str:
    """``("color=red",)`` -> ``"color=red"``; an id list -> ``"ids-<hash>"`` (its size in front)."""
    from erase.toy.world import parse_exclusion

    parts = ["=".join(parse_exclusion(s)) for s in sorted(exclude)]
    if ids:
        digest = hashlib.sha256(",".join(map(str, sorted(set(ids)))).encode()).hexdigest()[:12]
        parts.append(f"ids{len(set(ids))}-{digest}")
    if not parts:
        raise EraseError("an oracle needs something to leave out: --exclude AXIS=VALUE or --exclude-ids")
    return "+".join(parts)


def kind_of(exclude: Sequence[str], ids: Sequence[int]) -> str:
    # Leaving out a whole concept is the unlearning reference; specific samples, untraining's.
    return "unlearning" if exclude and not ids else "untraining"


def forget_oracle(spec: str, ids: Sequence[int]) -> tuple[Path | None, str]:
    """The oracle matching a toy forget set (``toy:color=red:n=32``) and its key: a whole concept's
    (the unlearning oracle) when the spec names exactly one concept, else the ids' (untraining)."""
    parts = [x for x in spec.split(":")[1:] if x]
    concept_wide = all("=" in x and x.split("=")[0] in ("color", "shape", "style") for x in parts)
    exclude, ex_ids = (parts, []) if concept_wide and len(parts) == 1 else ([], list(ids))
    return find_oracle(exclude, ex_ids), oracle_key(exclude, ex_ids)


def find_oracle(exclude: Sequence[str] = (), ids: Sequence[int] = ()) -> Path | None:
    """The folder of a shipped or cached oracle for this exclusion, or None."""
    key = oracle_key(exclude, ids)
    for root in (SHIPPED, cache_root()):
        if (root / key / "delta.safetensors").is_file():
            return root / key
    return None


def build_oracle(
    exclude: Sequence[str] = (),
    ids: Sequence[int] = (),
    *,
    out: Path | None = None,
    unet_steps: int | None = None,
    threads: int = 2,
    **recipe,
) -> Path:
    """Retrain the toy UNet without the excluded samples and store it as a full-UNet delta.
    ``recipe`` overrides other fields of the recipe (tests shrink the world)."""
    from dataclasses import asdict, replace

    from diffusers import UNet2DConditionModel

    from erase.delta import DELTA_NAME, save_delta
    from erase.io import atomic_dir, check_writable, write_json
    from erase.models import model_fingerprint
    from erase.recipes.train import ToyTrainConfig, train_toy
    from erase.record import versions
    from erase.toy.world import World, parse_exclusion, select

    key = oracle_key(exclude, ids)
    cfg = ToyTrainConfig(stages=("unet",), exclude=tuple(exclude), exclude_ids=tuple(sorted(set(ids))))
    if unet_steps is not None:
        cfg = replace(cfg, unet_steps=unet_steps)
    cfg = replace(cfg, threads=threads, **recipe)
    world = World(cfg.seed, cfg.world_size)
    left = len(select(world, cfg.exclude, cfg.exclude_ids))  # validates ids and exclusions
    out = Path(out) if out else cache_root() / key
    check_writable(out)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = train_toy(cfg, Path(tmp) / "world", base=WEIGHTS)
        unet = UNet2DConditionModel.from_pretrained(Path(tmp) / "world" / "pipeline" / "unet")
    names = [n for n, _ in unet.named_parameters()]
    concepts = {"erase": parse_exclusion(exclude[0])[1]} if len(exclude) == 1 and not ids else {}
    if ids:
        concepts["forget_ids"] = len(set(ids))
    meta = {
        "base_model": "toy",
        "base_fingerprint": model_fingerprint("toy"),
        "method": "retrain",
        "kind": kind_of(exclude, ids),
        "oracle": key,
        "concepts": concepts,
        "exclude": list(cfg.exclude),
        "exclude_ids": list(cfg.exclude_ids),
        "config": asdict(cfg),
        "seed": cfg.seed,
        "versions": versions(),
        "wall_seconds": manifest["train_seconds"],
        "trainable_parameters": sum(p.numel() for p in unet.parameters()),
        "train_samples": left,
        "tensors": len(names),
    }
    with atomic_dir(out) as t:
        save_delta(t / DELTA_NAME, unet, names, meta)
        write_json(t / "record.json", {"command": "toy oracle", **meta, "manifest": manifest})
    return out
