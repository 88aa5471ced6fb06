"""``erase export RUN --format lora``: an erasure as a diffusers/PEFT LoRA file, with a model card.

The rank is chosen by what a user sees, not by a norm: each candidate rank (1, 2, 4, ... up to the
edit's full rank) is applied to the base model, the erased concept's and its neighbours' held-out
prompts are drawn on evaluation seeds, and the judge's verdicts are compared image by image with the
full edit's. The smallest rank whose verdicts agree on at least ``--agree`` of the images is written
(``--rank R`` writes R and reports its agreement). The record keeps every rank tried: agreement, the
images' mean absolute difference from the full edit's, the weights' relative error, and the file sizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from erase.errors import EraseError
from erase.jobs.base import (
    FieldError,
    JobResult,
    JudgeOptions,
    ModelOptions,
    OutOptions,
    option,
    positive,
    start_record,
)
from erase.seeds import eval_image_seeds, split_of

USAGE = """from diffusers import DiffusionPipeline

pipe = DiffusionPipeline.from_pretrained({base!r})
pipe.load_lora_weights({folder!r})  # this folder: {weight}
image = pipe({prompt!r}).images[0]"""


@dataclass(frozen=True, kw_only=True)
class ExportJob(ModelOptions, JudgeOptions, OutOptions):
    """Export an erasure as a LoRA file that diffusers' load_lora_weights loads, with a model card."""

    COMMAND = "export"

    run: str = option(help="an erase run folder (or its delta file)", positional=True)
    format: Literal["lora"] = option("lora", "what to write: lora (a diffusers/PEFT LoRA)")
    rank: int | None = option(
        None, "the LoRA's rank (default: the smallest whose verdicts agree with the full edit's)"
    )
    agree: float = option(0.95, "share of images whose judge verdict must match the full edit's")
    model: str | None = option(None, "base model (default: the one the delta records)")
    seeds: tuple[int, ...] = option(
        eval_image_seeds(4), "held-out seeds of the images the ranks are compared on", grammar="seeds"
    )
    steps: int = option(10, "sampling steps of those images")

    def check(self) -> None:
        super().check()
        positive(self, "rank", "steps")
        if not 0 < self.agree <= 1:
            raise FieldError("agree", f"must be in (0, 1], got {self.agree}")


def run(cfg: ExportJob) -> JobResult:
    from safetensors.torch import load_file

    from erase.delta import check_base, delta_path, read_meta
    from erase.lora import decompose
    from erase.models import model_fingerprint

    # 1. Check inputs before loading anything.
    path = delta_path(cfg.run)
    meta = read_meta(path)
    book, target = cfg.erased_concept(meta, path)
    keep = [
        book.get(label) for label in target.group.labels if label != target.label and label in book.concepts
    ]
    cfg.check_judge([target, *keep])
    base = cfg.model or meta["base_model"]
    check_base(path, meta, model_fingerprint(base))
    _check_shapes(path)
    out = cfg.out_dir("export", target.name, (Path(cfg.run) / "lora") if Path(cfg.run).is_dir() else None)
    rec = start_record(
        cfg, cfg.seeds, delta=str(path), base_model=base, seed_split={"images": split_of(cfg.seeds)}
    )
    for c in (target, *keep):
        rec.prompts(c.name, texts=c.heldout)

    # 2. The edit's weight differences, decomposed; the ranks compared by the judge.
    pipe = cfg.load(base)
    judge = cfg.load_judge(cfg.judge)
    svds, dropped = decompose(pipe.unet, load_file(str(path)))
    if not svds:  # the shapes said it might; the values say nothing changed
        raise EraseError(f"{path} changes no Linear or Conv2d weight of this base: there is no LoRA to write")
    tried, chosen = _choose_rank(cfg, pipe, judge, path, base, [target, *keep], svds)
    record = _write(cfg, out, rec, path, meta, base, target, svds, dropped, tried, chosen)
    return JobResult(out, record)


def _check_shapes(path: Path) -> None:
    """Refuse, before loading, a delta with no weight a LoRA can carry (a matrix or a conv kernel)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        names = list(f.keys())
        carried = [k for k in names if k.endswith(".weight") and len(f.get_slice(k).get_shape()) in (2, 4)]
    if not carried:
        raise EraseError(
            f"{path} changes no matrix or conv weight (only biases, norms or embeddings): a LoRA cannot "
            "carry it; use erase apply for a full pipeline"
        )


def _choose_rank(cfg, pipe, judge, path, base, concepts, svds) -> tuple[list[dict], int]:
    """Draw the concepts' held-out prompts with the full edit, then with each candidate rank."""
    import numpy as np

    from erase.audit import delta_applied
    from erase.generate import generate
    from erase.lora import set_low_rank, weight_error
    from erase.models import model_fingerprint

    # One group (the erased concept's, its neighbours'): the judge reads all the images at once.
    prompts = [p for c in concepts for p in c.heldout]
    per_image = [p for p in prompts for _ in cfg.seeds]  # generate's order: prompt-major
    unet = pipe.unet
    named = dict(unet.named_parameters())
    base_weights = {s.name: named[f"{s.name}.weight"].detach().clone() for s in svds}

    def draw():
        images = generate(pipe, prompts, cfg.seeds, steps=cfg.steps, progress=False)
        labels = list(judge.verdicts(concepts[0].group, images, per_image).predicted)
        return np.stack([np.asarray(im, dtype=np.float32) / 255 for im in images]), labels

    with delta_applied(pipe, path, model_fingerprint(base)):  # the base back after: what a LoRA is added to
        full_images, full_labels = draw()
    full_rank = max(s.full_rank for s in svds)
    ranks = (
        [cfg.rank] if cfg.rank else sorted({min(2**i, full_rank) for i in range(full_rank.bit_length() + 1)})
    )
    tried = []
    for rank in ranks:
        set_low_rank(unet, base_weights, svds, rank)
        images, labels = draw()
        agreeing = sum(a == b for a, b in zip(labels, full_labels))
        agreement = agreeing / len(labels)
        tried.append(
            {
                "rank": rank,
                "agreement": agreement,
                "agreeing": agreeing,
                "n": len(labels),
                "image_mad": float(np.abs(images - full_images).mean()),
                "weight_error": weight_error(svds, rank),
            }
        )
        print(
            f"rank {rank:>4}: verdicts agree on {tried[-1]['agreeing']}/{len(labels)} images ({agreement:.2f})"
        )
        if not cfg.rank and agreement >= cfg.agree:
            break
    set_low_rank(unet, base_weights, svds, None)
    return tried, tried[-1]["rank"]


def _write(cfg, out, rec, path, meta, base, target, svds, dropped, tried, chosen) -> dict:
    from erase.card import model_card
    from erase.io import atomic_dir, write_json
    from erase.lora import WEIGHT_NAME, save_lora, state_dict
    from erase.models import resolve_model_folder
    from erase.stats import wilson

    last = tried[-1]
    lo, hi = wilson(last["agreeing"], last["n"])
    with atomic_dir(out) as tmp:
        tensors = state_dict(svds, chosen)
        save_lora(tmp / WEIGHT_NAME, tensors, {"delta": str(path), "rank": chosen, **meta})
        size = (tmp / WEIGHT_NAME).stat().st_size
        results = {
            "format": cfg.format,
            "rank": chosen,
            "chosen_by": "--rank" if cfg.rank else f"smallest rank with verdict agreement >= {cfg.agree}",
            "reached": last["agreement"] >= cfg.agree,
            "agreement": {**last, "ci95": [lo, hi]},
            "tried": tried,
            "full_rank": max(s.full_rank for s in svds),
            "rank_for_99pct_energy": max(s.rank_for(0.99) for s in svds),
            "weights": len(svds),
            "dropped": dropped,  # changed tensors a LoRA cannot carry (biases, norms): left at the base
            "bytes": {"lora": size, "delta": path.stat().st_size},
        }
        details = [
            f"- This is a rank-{chosen} LoRA of the edit ({len(svds)} weights; the edit's full rank is "
            f"{results['full_rank']}): the judge's verdicts agree with the full edit's on "
            f"{last['agreeing']}/{last['n']} images (95% CI {lo:.2f}-{hi:.2f}), {size / 1e6:.2f} MB on disk.",
        ]
        if dropped:
            details.append(
                f"- Not carried (a LoRA cannot): {len(dropped)} changed tensors, e.g. `{dropped[0]}`."
            )
        usage = USAGE.format(
            base=str(resolve_model_folder(base)),
            folder=str(out),
            weight=WEIGHT_NAME,
            prompt=target.heldout[0],
        )
        (tmp / "README.md").write_text(model_card(path, meta, artifact="lora", usage=usage, details=details))
        record = rec.finish(results, trainable=sum(t.numel() for t in tensors.values()))
        write_json(tmp / "export.json", record)
    counted = f"{last['agreeing']}/{last['n']} images [{lo:.2f}, {hi:.2f}]"
    if cfg.rank:
        said = f"rank {chosen} (as asked): verdicts agree with the full edit's on {counted}"
    elif results["reached"]:
        said = f"rank {chosen}, the smallest tried whose verdicts agree with the full edit's on >= {cfg.agree:g}: {counted}"
    else:
        said = (
            f"rank {chosen}, the edit's full rank: verdicts agree on only {counted}, below --agree {cfg.agree:g} "
            f"(what a LoRA cannot carry: {len(dropped)} tensors; or the judge's own noise)"
        )
    print(
        f"{said}; {size / 1e6:.2f} MB (the delta: {path.stat().st_size / 1e6:.2f} MB)\nLoRA and model card: {out}"
    )
    return record
