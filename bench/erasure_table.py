"""The README's erasure table: every concept-level method on a shape and a colour of the toy world,
with what it costs the concepts it should keep, and its edit time.

    python bench/erasure_table.py --seeds 1000-1003 --out erasure_table.json

Each row erases one concept with the CLI's defaults (the concept file's anchors, the other concepts
of its group preserved) from a fresh copy of the toy model, then scores all colours and shapes on
held-out phrasings and seeds with the toy CLIP.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from erase.concepts import load_concepts
from erase.methods import names
from erase.models import load_judge, load_pipeline
from erase.score import score_concepts
from erase.specs import parse_seeds
from erase.unlearn import concept_inputs, run_method

COLORS = ["red", "green", "blue", "yellow"]
SHAPES = ["circle", "square", "triangle", "cross"]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default=",".join(names("unlearning", one_per_file=True)))
    p.add_argument("--concepts", default="circle,red")
    p.add_argument("--seeds", default="1000-1003")
    p.add_argument("--steps", type=int, default=20, help="sampling steps when scoring")
    p.add_argument("--out", help="write the JSON here")
    args = p.parse_args()
    torch.set_num_threads(2)
    book, judge = load_concepts("toy"), load_judge("toy", device="cpu")
    seeds = parse_seeds(args.seeds)

    def score(pipe):
        res = score_concepts(
            pipe, judge, [book.get(n) for n in COLORS + SHAPES], seeds=seeds, steps=args.steps, progress=False
        )
        return {n: r["accuracy"] for n, r in res["concepts"].items()}

    base = score(load_pipeline("toy", device="cpu"))
    rows = []
    for method in args.methods.split(","):
        for concept in args.concepts.split(","):
            pipe = load_pipeline("toy", device="cpu")
            target = book.get(concept)
            keep = [book.get(n) for n in target.group.labels if n != concept]
            t0 = time.time()
            out = run_method(pipe, method, concept_inputs(target, keep), seed=0, progress=False)
            seconds = time.time() - t0
            after = score(pipe)
            same = [n for n in (COLORS if concept in COLORS else SHAPES) if n != concept]
            other = SHAPES if concept in COLORS else COLORS
            row = {
                "method": method,
                "concept": concept,
                "target_before": base[concept],
                "target_after": after[concept],
                "same_group_before": sum(base[n] for n in same) / len(same),
                "same_group_after": sum(after[n] for n in same) / len(same),
                "same_group_worst_drop": max(base[n] - after[n] for n in same),
                "other_group_before": sum(base[n] for n in other) / len(other),
                "other_group_after": sum(after[n] for n in other) / len(other),
                "other_group_worst_drop": max(base[n] - after[n] for n in other),
                "edit_seconds": round(seconds, 1),
                "edited_parameters": out.log.get("trainable_parameters"),
                "after": after,
            }
            rows.append(row)
            print(
                json.dumps(
                    {k: (round(v, 2) if isinstance(v, float) else v) for k, v in row.items() if k != "after"}
                ),
                flush=True,
            )
    print(
        "\n| method | erased | target before -> after | same group (mean; worst drop) | "
        "other group (mean; worst drop) | edit time |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['method']} | {r['concept']} | {r['target_before']:.2f} -> {r['target_after']:.2f} | "
            f"{r['same_group_before']:.2f} -> {r['same_group_after']:.2f}; {r['same_group_worst_drop']:+.2f} | "
            f"{r['other_group_before']:.2f} -> {r['other_group_after']:.2f}; {r['other_group_worst_drop']:+.2f} | "
            f"{r['edit_seconds']:.0f} s |"
        )
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"seeds": seeds, "base": base, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
