"""The robustness table judged again, from the images the study drew: with a "none of these"
label, or by fitting the renderer's shapes.

    python bench/rejudge_attacks.py runs/toy-robustness --neutral "an image" \
        --out docs/results/robustness_toy_neutral.json
    python bench/rejudge_attacks.py runs/toy-robustness --fit --out docs/results/robustness_toy_fit.json

The toy judge picks one of the group's labels for every image; an image that shows no shape at all
(a blob, a barred box) is still called one of the four. Here each image of the study is judged
again, either with one more label, ``--neutral`` (counted as the concept only when the judge
prefers the concept to every shape and to "none of these"), or with ``--fit``: the shape read off
the image by fitting the renderer's own shapes (``erase.toy.fit``; "none" when nothing fits).
No image is drawn again: each is cut back out of the run's ``images.png`` (a grid of the
evaluation seeds, enlarged by a whole factor with nearest-neighbour pixels, so the cut is exact),
and the script first checks that judging them as the study did gives the record's counts.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image

from erase.report.console import markdown_table
from erase.stats import rate


def cut(grid: Path, n: int, cols: int, size: int) -> list[Image.Image]:
    """The ``n`` images of a grid written by ``erase.generate.grid`` (no labels), at ``size`` px."""
    with Image.open(grid) as g:
        g = g.convert("RGB")
        cw = g.width // cols
        ims = []
        for k in range(n):
            r, c = divmod(k, cols)
            cell = g.crop((c * cw, r * cw, (c + 1) * cw, (r + 1) * cw))
            ims.append(cell.resize((size, size), Image.Resampling.NEAREST))
    return ims


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", type=Path)
    how = ap.add_mutually_exclusive_group(required=True)
    how.add_argument("--neutral", help='the "none of these" label, e.g. "an image"')
    how.add_argument("--fit", action="store_true", help="read the shape by fitting the renderer's shapes")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    from erase.concepts import load_concepts
    from erase.models import load_judge, load_pipeline
    from erase.score import classify_concept
    from erase.toy.fit import MIN_IOU, classify_shape
    from erase.toy.world import SHAPES

    paths = sorted(args.study.glob("*/attack/attack.json"), key=lambda p: p.stat().st_mtime)
    if not paths:
        raise SystemExit(f"{args.study} holds no */attack/attack.json; run the study first")
    pipe = load_pipeline("toy")
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor  # the size the images were drawn at
    forced = load_judge("toy")
    neutral = None if args.fit else load_judge("toy", neutral=args.neutral)
    how = f"fit (min_iou {MIN_IOU})" if args.fit else f"neutral label {args.neutral!r}"

    def again(target, images, meant) -> dict:
        if args.fit:
            return classify_shape(target.label, images)
        return classify_concept(neutral, target, images, meant)

    rows, body, seen = [], [], {}
    for path in paths:
        record = json.loads(path.read_text())
        res, cfg = record["results"], record["config"]
        book = load_concepts(cfg["concepts"])
        target = book.get(res["concept"])
        if args.fit and target.label not in SHAPES:
            print(f"{path}: {target.name} is not a shape; the fit reads shapes only, left out")
            continue
        seeds = cfg["eval_seeds"]
        for a in res["attacks"]:
            for model in res["models"]:
                found = a[model]
                if found.get("success") is None:
                    continue
                key = (a["attack"], model, found["images"]) if model != "erased" else None
                if key and key in seen:  # the calibration's images, judged once
                    continue
                n = len(found["prompts"]) * len(seeds)
                images = cut(path.parent / found["images"], n, len(seeds), size)
                meant = [p for p in target.heldout for _ in seeds]
                plain = classify_concept(forced, target, images, meant)
                if plain["per_image"] != found["success"]["per_image"]:
                    raise SystemExit(
                        f"{path}: {a['attack']} on {model}: the cut images do not give the record's verdicts"
                    )
                strict = again(target, images, meant)
                label = res["method"] if model == "erased" else model
                row = {
                    "run": path.parent.parent.name,
                    "model": label,
                    "attack": a["attack"],
                    "forced": [plain["hits"], plain["n"]],
                    "again": [strict["hits"], strict["n"]],
                    "ci95_again": strict["ci95"],
                    "predicted_again": strict["predicted"],
                    "per_image_again": strict["per_image"],
                }
                rows.append(row)
                if key:
                    seen[key] = row
    attacks = list(dict.fromkeys(r["attack"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    cell = {(r["model"], r["attack"]): r for r in rows}
    for m in models:
        line = [m]
        for a in attacks:
            r = cell.get((m, a))
            line.append("-" if r is None else f"{rate(*r['again'])} (forced: {r['forced'][0]})")
        body.append(line)
    table = markdown_table(["model", *attacks], body)
    print(table)
    if args.out:
        flag = "--fit" if args.fit else f"--neutral {args.neutral!r}"
        whole = {
            "command": f"python bench/rejudge_attacks.py {args.study} {flag}",
            "judged_again_by": how,
            "rows": rows,
        }
        args.out.write_text(json.dumps(whole, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(table + "\n")


if __name__ == "__main__":
    main()
