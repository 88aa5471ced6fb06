"""The robustness table judged again with a "none of these" label, from the images the study drew.

    python bench/rejudge_attacks.py runs/toy-robustness --neutral "an image" \
        --out docs/results/robustness_toy_neutral.json

The toy judge picks one of the group's labels for every image; an image that shows no shape at all
(a blob, a barred box) is still called one of the four. Here each image of the study is judged again
with one more label, ``--neutral`` (the text the README recommends, fixed before this was run), and
counted as the concept only when the judge prefers the concept to every shape and to "none of
these". No image is drawn again: each is cut back out of the run's ``images.png`` (a grid of the
evaluation seeds, enlarged by a whole factor with nearest-neighbour pixels, so the cut is exact),
and the script first checks that judging them without the neutral label gives the record's counts.
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
    ap.add_argument("--neutral", required=True, help='the "none of these" label, e.g. "an image"')
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    from erase.concepts import load_concepts
    from erase.models import load_judge, load_pipeline
    from erase.score import classify_concept

    paths = sorted(args.study.glob("*/attack/attack.json"), key=lambda p: p.stat().st_mtime)
    if not paths:
        raise SystemExit(f"{args.study} holds no */attack/attack.json; run the study first")
    pipe = load_pipeline("toy")
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor  # the size the images were drawn at
    judges = {None: load_judge("toy"), args.neutral: load_judge("toy", neutral=args.neutral)}
    rows, body, seen = [], [], {}
    for path in paths:
        record = json.loads(path.read_text())
        res, cfg = record["results"], record["config"]
        book = load_concepts(cfg["concepts"])
        target = book.get(res["concept"])
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
                plain = classify_concept(judges[None], target, images, meant)
                if plain["per_image"] != found["success"]["per_image"]:
                    raise SystemExit(
                        f"{path}: {a['attack']} on {model}: the cut images do not give the record's verdicts"
                    )
                strict = classify_concept(judges[args.neutral], target, images, meant)
                label = res["method"] if model == "erased" else model
                row = {
                    "run": path.parent.parent.name,
                    "model": label,
                    "attack": a["attack"],
                    "forced": [plain["hits"], plain["n"]],
                    "with_neutral": [strict["hits"], strict["n"]],
                    "ci95_with_neutral": strict["ci95"],
                    "predicted_with_neutral": strict["predicted"],
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
            line.append("-" if r is None else f"{rate(*r['with_neutral'])} (forced: {r['forced'][0]})")
        body.append(line)
    table = markdown_table(["model", *attacks], body)
    print(table)
    if args.out:
        whole = {
            "command": f"python bench/rejudge_attacks.py {args.study} --neutral {args.neutral!r}",
            "neutral": args.neutral,
            "rows": rows,
        }
        args.out.write_text(json.dumps(whole, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(table + "\n")


if __name__ == "__main__":
    main()
