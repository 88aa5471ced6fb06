"""Choose the fit judge's one setting (``erase.toy.fit.MIN_IOU``) on tuning image seeds.

    python bench/fit_judge_tuning.py --out docs/results/fit_judge_tuning.json

The base toy model draws every shape's held-out phrasings on tuning image seeds (at the robustness
study's 10 sampling steps); the CLIP judge, on its home ground there, reads each image, and so does
the fit at every threshold of the grid. Rule, written before the run: take the strictest threshold
whose agreement with the CLIP judge is within 0.01 of the best agreement on the grid (strict,
because a lenient fit would call anything a shape; within 0.01, so that strictness costs at most
one image in a hundred of the base model's own drawings). Renders of the world (every shape,
colour and style, their own jitter) are read too, as a check that the chosen threshold accepts
what the renderer draws.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

GRID = [round(x, 3) for x in np.arange(0.40, 0.901, 0.025)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="1000-1005", help="image seeds (tuning)")
    ap.add_argument("--steps", type=int, default=10, help="sampling steps")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(2)

    from erase.concepts import load_concepts
    from erase.judges import load_judge
    from erase.models import load_pipeline
    from erase.score import _classifier, score_concepts
    from erase.seeds import split_of
    from erase.specs import parse_seeds
    from erase.toy.fit import read
    from erase.toy.world import COLORS, SHAPES, STYLES, render_spec

    seeds = parse_seeds(args.seeds)
    if split_of(seeds) != "tuning":
        raise SystemExit(f"--seeds {args.seeds}: the fit judge is tuned on tuning image seeds only")
    started = time.time()
    book = load_concepts("toy")
    judge = load_judge("toy", device="cpu")
    scored = score_concepts(
        load_pipeline("toy", device="cpu"),
        judge,
        [book.get(s) for s in SHAPES],
        seeds=seeds,
        steps=args.steps,
        progress=False,
        keep_images=True,
    )["concepts"]
    images = [im for shape in SHAPES for im in scored[shape]["images"]]
    clip = _classifier(judge, book.get(SHAPES[0]), {}).predict(images)  # the shape CLIP names
    readings = [read(im, min_iou=0.0) for im in images]
    agreement = {}
    for t in GRID:
        fit = [r.shape if r.fit >= t else "none" for r in readings]
        agreement[t] = sum(f == c for f, c in zip(fit, clip)) / len(images)
    best = max(agreement.values())
    chosen = max(t for t, a in agreement.items() if a >= best - 0.01)

    renders = {}
    for style in STYLES:
        for shape in SHAPES:
            fits = [
                read(render_spec(c, shape, style, np.random.default_rng([9, i])), min_iou=0.0)
                for i, c in enumerate(list(COLORS) * 6)
            ]
            renders[f"{style} {shape}"] = {
                "read_as_shape": int(sum(r.shape == shape and r.fit >= chosen for r in fits)),
                "n": len(fits),
                "lowest_fit": round(min(r.fit for r in fits), 4),
            }
    record = {
        "command": f"python bench/fit_judge_tuning.py --seeds {args.seeds} --steps {args.steps}",
        "rule": "the strictest threshold whose agreement with the CLIP judge is within 0.01 of the best",
        "image_seeds": seeds,
        "seed_split": split_of(seeds),
        "sample_steps": args.steps,
        "images": len(images),
        "clip_reads_the_prompts_shape": sum(c == s for c, s in zip(clip, _prompted(scored, SHAPES))),
        "agreement": {str(t): round(a, 4) for t, a in agreement.items()},
        "chosen_min_iou": chosen,
        "at_grid_edge": chosen in (GRID[0], GRID[-1]),
        "renders": renders,
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
        "wall_seconds": round(time.time() - started, 1),
    }
    print(json.dumps({k: v for k, v in record.items() if k != "renders"}, indent=1))
    if args.out:
        args.out.write_text(json.dumps(record, indent=2) + "\n")


def _prompted(scored: dict, shapes) -> list[str]:
    return [s for s in shapes for _ in scored[s]["images"]]


if __name__ == "__main__":
    main()
