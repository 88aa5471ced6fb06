"""The README's erasure table: every concept-level method on a shape and a colour of the toy world,
with what it costs the concepts it should keep, and its edit time.

    python bench/erasure_table.py --seeds 1000-1003 --out erasure_table.json

Each row is one `erase concept` job with its defaults (the concept file's anchors, the other
concepts of its group preserved) on a fresh copy of the toy model, watching the other group too,
so every colour and shape is scored on held-out phrasings and seeds with the toy CLIP before and
after. The runs' folders (delta and record each) are kept under --runs.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from erase.jobs import ConceptJob, run
from erase.methods import names
from erase.specs import parse_seeds

COLORS = ["red", "green", "blue", "yellow"]
SHAPES = ["circle", "square", "triangle", "cross"]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default=",".join(names("unlearning", one_per_file=True)))
    p.add_argument("--concepts", default="circle,red")
    p.add_argument("--seeds", default="1000-1003")
    p.add_argument("--steps", type=int, default=20, help="sampling steps when scoring")
    p.add_argument("--runs", type=Path, help="keep each run's folder here (default: a temporary folder)")
    p.add_argument("--out", help="write the JSON here")
    args = p.parse_args()
    torch.set_num_threads(2)
    seeds = parse_seeds(args.seeds)
    runs = args.runs or Path(tempfile.mkdtemp(prefix="erasure-table-"))
    rows, base = [], {}
    for method in args.methods.split(","):
        for concept in args.concepts.split(","):
            same, other = (COLORS, SHAPES) if concept in COLORS else (SHAPES, COLORS)
            job = ConceptJob(
                concept=concept,
                method=method,
                watch=other,
                eval_seeds=seeds,
                eval_steps=args.steps,
                out=runs / f"{method}-{concept}",
            )
            res = run(job).results
            before = {n: r["accuracy"] for n, r in res["before"]["concepts"].items()}
            after = {n: r["accuracy"] for n, r in res["after"]["concepts"].items()}
            base |= before
            rows.append(_row(method, concept, before, after, same, other, res))
            print(
                json.dumps(
                    {
                        k: round(v, 2) if isinstance(v, float) else v
                        for k, v in rows[-1].items()
                        if k != "after"
                    }
                )
            )
    _table(rows)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"seeds": seeds, "base": base, "rows": rows}, f, indent=2)


def _row(method, concept, before, after, same, other, res) -> dict:
    same = [n for n in same if n != concept]
    return {
        "method": method,
        "concept": concept,
        "target_before": before[concept],
        "target_after": after[concept],
        "same_group_before": sum(before[n] for n in same) / len(same),
        "same_group_after": sum(after[n] for n in same) / len(same),
        "same_group_worst_drop": max(before[n] - after[n] for n in same),
        "other_group_before": sum(before[n] for n in other) / len(other),
        "other_group_after": sum(after[n] for n in other) / len(other),
        "other_group_worst_drop": max(before[n] - after[n] for n in other),
        "edit_seconds": round(res["edit_seconds"], 1),
        "edited_parameters": res["method_log"].get("trainable_parameters"),
        "after": after,
    }


def _table(rows) -> None:
    from erase.report.console import markdown_table

    header = ["method", "erased", "target before -> after", "same group (mean; worst drop)"]
    header += ["other group (mean; worst drop)", "edit time"]
    print()
    print(
        markdown_table(
            header,
            [
                [
                    r["method"],
                    r["concept"],
                    f"{r['target_before']:.2f} -> {r['target_after']:.2f}",
                    f"{r['same_group_before']:.2f} -> {r['same_group_after']:.2f}; {r['same_group_worst_drop']:+.2f}",
                    f"{r['other_group_before']:.2f} -> {r['other_group_after']:.2f}; {r['other_group_worst_drop']:+.2f}",
                    f"{r['edit_seconds']:.0f} s",
                ]
                for r in rows
            ],
        )
    )


if __name__ == "__main__":
    main()
