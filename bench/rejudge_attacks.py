"""An attack study judged again by another judge, from the images the study drew.

    python bench/rejudge_attacks.py runs/toy-robustness --judge toy \
        --out docs/results/robustness_toy_clip.json
    python bench/rejudge_attacks.py runs/toy-robustness --judge toy --neutral "an image" \
        --out docs/results/robustness_toy_neutral.json
    python bench/rejudge_attacks.py runs/toy-attacks --fit --out docs/results/attacks_toy_fit.json

The toy CLIP judge picks one of the group's labels for every image; an image that shows no shape at
all (a blob, a barred box) is still called one of the four. The fit judge (``toy-fit``) reads the
shape off the image by fitting the renderer's own shapes and says "none" when nothing fits; a CLIP
judge with ``--neutral`` has one more label for "none of these". Here each image of a study is
judged again by ``--judge`` (``--fit`` is ``--judge toy-fit``). No image is drawn again: each is
cut back out of the run's ``images.png`` (a grid of the evaluation seeds, enlarged by a whole factor
with nearest-neighbour pixels, so the cut is exact), and the script first checks that judging them
as the study did (its records' judge) gives the records' counts.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image

from erase.errors import EraseError
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
    how.add_argument("--judge", help="the judge that reads the images again: toy, toy-fit, ...")
    how.add_argument("--fit", action="store_true", help="the same as --judge toy-fit")
    ap.add_argument("--neutral", help='a "none of these" label for a CLIP judge, e.g. "an image"')
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    spec = "toy-fit" if args.fit else args.judge

    from erase.concepts import load_concepts
    from erase.judges import check_judge, load_judge
    from erase.models import load_pipeline
    from erase.score import classify_concept
    from erase.toy.fit import MIN_IOU

    paths = sorted(args.study.glob("*/attack/attack.json"), key=lambda p: p.stat().st_mtime)
    if not paths:
        raise SystemExit(f"{args.study} holds no */attack/attack.json; run the study first")
    pipe = load_pipeline("toy")
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor  # the size the images were drawn at
    second = load_judge(spec, neutral=args.neutral)
    how = f"{spec}" + (f" (min_iou {MIN_IOU})" if spec == "toy-fit" else "")
    how += f", neutral label {args.neutral!r}" if args.neutral else ""
    first: dict = {}  # the study's own judges, by (spec, neutral)

    rows, body, seen = [], [], {}
    for path in paths:
        record = json.loads(path.read_text())
        res, cfg = record["results"], record["config"]
        book = load_concepts(cfg["concepts"])
        target = book.get(res["concept"])
        try:
            check_judge(second.spec, groups=[target.group])
        except EraseError as e:
            print(f"{path}: {e}; left out")
            continue
        own = (cfg["judge"], cfg.get("neutral"))
        if own not in first:
            first[own] = load_judge(own[0], neutral=own[1])
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
                plain = classify_concept(first[own], target, images, meant)
                if plain["per_image"] != found["success"]["per_image"]:
                    raise SystemExit(
                        f"{path}: {a['attack']} on {model}: the cut images do not give the record's verdicts"
                    )
                strict = classify_concept(second, target, images, meant)
                label = res["method"] if model == "erased" else model
                row = {
                    "run": path.parent.parent.name,
                    "model": label,
                    "attack": a["attack"],
                    "judge": own[0],
                    "study": [plain["hits"], plain["n"]],
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
            line.append("-" if r is None else f"{rate(*r['again'])} ({r['judge']}: {r['study'][0]})")
        body.append(line)
    table = markdown_table(["model", *attacks], body)
    print(table)
    if args.out:
        flag = "--fit" if args.fit else f"--judge {spec}"
        flag += f" --neutral {args.neutral!r}" if args.neutral else ""
        whole = {
            "command": f"python bench/rejudge_attacks.py {args.study} {flag}",
            "judged_again_by": how,
            "rows": rows,
        }
        args.out.write_text(json.dumps(whole, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(table + "\n")


if __name__ == "__main__":
    main()
