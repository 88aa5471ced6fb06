"""How good the toy model is at what erasure needs: does "a drawing of a red circle" give a red
circle? Scored by the toy CLIP over every colour x shape prompt in plain style, with held-out
phrasings and seeds (or by any judge that reads colours and shapes)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from erase.concepts import load_concepts
from erase.generate import generate
from erase.stats import rate
from erase.toy.world import COLORS, HELDOUT_TEMPLATES, SHAPES


def toy_quality(
    pipe, judge, seeds: Sequence[int], *, steps: int = 25, guidance: float = 7.5, progress: bool = True
) -> dict:
    book = load_concepts("toy")
    combos = [(c, s) for c in COLORS for s in SHAPES]
    prompts = [t.format(c=c, s=s) for c, s in combos for t in HELDOUT_TEMPLATES]
    images = generate(pipe, prompts, seeds, steps=steps, guidance=guidance, progress=progress)
    per = len(HELDOUT_TEMPLATES) * len(seeds)
    preds = {}
    for axis in ("color", "shape"):
        preds[axis] = judge.verdicts(book.groups[axis], images).predicted
    table = []
    for k, (c, s) in enumerate(combos):
        sl = slice(k * per, (k + 1) * per)
        hits = {
            "color": sum(p == c for p in preds["color"][sl]),
            "shape": sum(p == s for p in preds["shape"][sl]),
        }
        table.append(
            {"prompt": f"a {c} {s}", "n": per}
            | {axis: hits[axis] / per for axis in hits}
            | {f"{axis}_hits": int(hits[axis]) for axis in hits}
        )
    worst = min(table, key=lambda r: min(r["color_hits"], r["shape_hits"]))
    return {
        "color": float(np.mean([r["color"] for r in table])),
        "shape": float(np.mean([r["shape"] for r in table])),
        "color_hits": sum(r["color_hits"] for r in table),
        "shape_hits": sum(r["shape_hits"] for r in table),
        "n": len(images),
        "min_prompt": float(min(min(r["color"], r["shape"]) for r in table)),
        "min_prompt_hits": min(worst["color_hits"], worst["shape_hits"]),
        "min_prompt_name": worst["prompt"],
        "per_prompt": table,
        "prompts": prompts,
        "settings": {
            "seeds": list(seeds),
            "steps": steps,
            "guidance": guidance,
            "phrasings": list(HELDOUT_TEMPLATES),
            "images": len(images),
        },
        "images": images,
    }


def markdown(q: dict) -> str:
    from erase.report.console import markdown_table

    by_prompt = {r["prompt"]: r for r in q["per_prompt"]}
    rows = [
        [c]
        + [f"{by_prompt[f'a {c} {s}']['color']:.2f} / {by_prompt[f'a {c} {s}']['shape']:.2f}" for s in SHAPES]
        for c in COLORS
    ]
    lines = [markdown_table(["colour \\ shape", *SHAPES], rows)]
    n, per = q["n"], q["per_prompt"][0]["n"]
    lines.append(
        f"\nColour {rate(q['color_hits'], n)}, shape {rate(q['shape_hits'], n)}, worst prompt "
        f"{rate(q['min_prompt_hits'], per)} ({q['min_prompt_name']}) ({n} images, {per} per cell; "
        "cells: colour / shape accuracy)."
    )
    return "\n".join(lines)
