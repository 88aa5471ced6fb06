"""The README's erasure table: concept-level methods on a shape and a colour of the toy world, with
what each costs the concepts it should keep, and its edit time, on evaluation seeds.

    python bench/erasure_table.py --rows bench/erasure_rows.yaml --out docs/results/erasure_table.json

Each row is one `erase concept` job (its method, concept, anchor and settings; the other concepts
of its group preserved) on a fresh copy of the toy model, once per edit seed. Every colour and shape
is then scored with the toy CLIP on its held-out phrasings x the image seeds (the declared
evaluation seeds by default, ``erase.seeds``); the base model is scored once, on the same images.
Each score keeps its count (hits/n) and Wilson interval. Without --rows: every concept-level method
at its defaults on --concepts. The runs' folders (delta and record each) are kept under --runs.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch
import yaml

from erase.concepts import load_concepts
from erase.jobs import ConceptJob, run
from erase.judges import load_judge
from erase.methods import get_method, names
from erase.models import load_pipeline
from erase.score import score_concepts
from erase.seeds import eval_image_seeds, split_of
from erase.specs import format_seeds, parse_seeds
from erase.stats import wilson

COLORS = ["red", "green", "blue", "yellow"]
SHAPES = ["circle", "square", "triangle", "cross"]
ROW_KEYS = {"method", "concept", "anchor", "set", "edit_seeds", "note"}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--rows", type=Path, help="YAML list of rows: method, concept, anchor, set, edit_seeds, note"
    )
    p.add_argument("--methods", default=",".join(names("unlearning", one_per_file=True)))
    p.add_argument("--concepts", default="cross,red")
    p.add_argument("--seeds", default=format_seeds(eval_image_seeds(3)), help="image seeds")
    p.add_argument("--steps", type=int, default=15, help="sampling steps when scoring")
    p.add_argument(
        "--runs",
        type=Path,
        help="keep each run's folder here (default: a temporary folder); an edit already there is reused",
    )
    p.add_argument("--out", type=Path, help="write the JSON here (and the table beside it, .md)")
    args = p.parse_args()
    torch.set_num_threads(2)
    seeds = parse_seeds(args.seeds)
    rows = _rows(args)
    runs = args.runs or Path(tempfile.mkdtemp(prefix="erasure-table-"))
    book, judge = load_concepts("toy"), load_judge("toy", device="cpu")
    concepts = [book.get(n) for n in COLORS + SHAPES]
    started = time.time()

    def scores(pipe) -> dict:
        res = score_concepts(pipe, judge, concepts, seeds=seeds, steps=args.steps, progress=False)
        return {n: {"hits": r["hits"], "n": r["n"]} for n, r in res["concepts"].items()}

    base = scores(load_pipeline("toy", device="cpu"))
    out_rows = []
    for row in rows:
        edits = []
        for seed in row.get("edit_seeds", [0]):
            folder = runs / f"{row['method']}-{row['concept']}-{len(out_rows)}-seed{seed}"
            job = ConceptJob(
                concept=row["concept"],
                method=row["method"],
                anchor=row.get("anchor", "default"),
                set=dict(row.get("set", {})),
                seed=seed,
                no_score=True,
                out=folder,
            )
            done = folder / "record.json"
            if done.is_file() and (folder / "delta.safetensors").is_file():  # kept from an earlier run
                res = _kept(json.loads(done.read_text()), job, folder)
            else:
                res = run(job).results
            after = scores(load_pipeline(f"toy+{folder}", device="cpu"))
            edits.append({"seed": seed, "edit_seconds": res["edit_seconds"], "after": after})
        out_rows.append(_summary(row, base, edits))
        print(json.dumps({k: v for k, v in out_rows[-1].items() if k != "edits"}))
    record = {
        "command": "python bench/erasure_table.py " + " ".join(_argv(args)),
        "image_seeds": seeds,
        "seed_split": split_of(seeds),
        "sample_steps": args.steps,
        "judge": "toy",
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
        "wall_seconds": round(time.time() - started, 1),
        "base": base,
        "rows": out_rows,
    }
    table = _table(record)
    print(table)
    if args.out:
        args.out.write_text(json.dumps(record, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(table + "\n")


def _kept(kept: dict, job: ConceptJob, folder: Path) -> dict:
    """The results of an edit already in ``folder``, if it was made as ``job`` would make it now.
    The method's settings are compared as resolved (defaults, toy settings, overrides), not as
    written: a default that changed since (ESD's sampling did) must not pass for the same edit."""
    mine = {k: getattr(job, k) for k in ("method", "concept", "anchor", "seed")}
    settings = asdict(get_method(job.method).config(job.overrides, toy=True))
    same = {k: kept["config"].get(k) for k in mine} == mine
    if not same or json.loads(json.dumps(settings)) != kept["results"].get("config"):
        raise SystemExit(f"{folder} holds an edit made with other settings; use another --runs")
    return kept["results"]


def _argv(args) -> list[str]:
    out = ["--seeds", args.seeds, "--steps", str(args.steps)]
    return (
        ["--rows", str(args.rows)] if args.rows else ["--methods", args.methods, "--concepts", args.concepts]
    ) + out


def _rows(args) -> list[dict]:
    if not args.rows:
        return [
            {"method": m, "concept": c} for m in args.methods.split(",") for c in args.concepts.split(",")
        ]
    rows = yaml.safe_load(args.rows.read_text())
    if not isinstance(rows, list) or not rows:
        raise SystemExit(f"{args.rows}: expected a non-empty YAML list of rows")
    for i, row in enumerate(rows):
        unknown = set(row) - ROW_KEYS
        if unknown or not {"method", "concept"} <= set(row):
            raise SystemExit(f"{args.rows}: row {i} needs method and concept, may have {sorted(ROW_KEYS)}")
    return rows


def _summary(row: dict, base: dict, edits: list[dict]) -> dict:
    """Pooled over edit seeds: the target's count, and each neighbour's drop from the base."""
    concept = row["concept"]
    same, other = (COLORS, SHAPES) if concept in COLORS else (SHAPES, COLORS)
    same = [n for n in same if n != concept]

    def pooled(name):
        return sum(e["after"][name]["hits"] for e in edits), sum(e["after"][name]["n"] for e in edits)

    def acc(name, where=None):
        k, n = pooled(name) if where is None else (where[name]["hits"], where[name]["n"])
        return k / n

    def drops(group):
        return {n: acc(n, base) - acc(n) for n in group}

    k, n = pooled(concept)
    return {
        **{key: row[key] for key in ("method", "concept", "anchor", "set", "note") if key in row},
        "edit_seeds": [e["seed"] for e in edits],
        "target_before": base[concept],
        "target_after": {"hits": k, "n": n, "ci95": list(wilson(k, n))},
        "target_after_per_seed": [e["after"][concept]["hits"] / e["after"][concept]["n"] for e in edits],
        "same_group_drop": drops(same),
        "other_group_drop": drops(other),
        "edit_seconds": [e["edit_seconds"] for e in edits],
        "edits": edits,
    }


def _table(record: dict) -> str:
    from erase.report.console import markdown_table

    def worst(d):
        name = max(d, key=d.get)
        return f"{d[name]:+.2f} ({name})"

    body = []
    for r in record["rows"]:
        t0, t1 = r["target_before"], r["target_after"]
        lo, hi = t1["ci95"]
        setting = ", ".join(
            ([f"anchor {r['anchor']!r}"] if "anchor" in r else [])
            + [f"{k}={v}" for k, v in r.get("set", {}).items()]
        )
        per_seed = " / ".join(f"{a:.2f}" for a in r["target_after_per_seed"])
        body.append(
            [
                r["method"],
                setting or "defaults",
                r["concept"],
                ", ".join(map(str, r["edit_seeds"])),
                f"{t0['hits']}/{t0['n']} -> {t1['hits']}/{t1['n']} = {t1['hits'] / t1['n']:.2f} [{lo:.2f}, {hi:.2f}]"
                + (f" ({per_seed})" if len(r["edit_seeds"]) > 1 else ""),
                worst(r["same_group_drop"]),
                worst(r["other_group_drop"]),
                " / ".join(f"{s:.0f}" for s in r["edit_seconds"]) + " s",
            ]
        )
    header = [
        "method",
        "settings",
        "erased",
        "edit seeds",
        "target: before -> after (pooled, 95% CI; per seed)",
    ]
    header += ["same group: worst drop", "other group: worst drop", "edit time"]
    return markdown_table(header, body)


if __name__ == "__main__":
    main()
