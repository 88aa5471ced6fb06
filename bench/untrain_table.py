"""The README's untraining table: every data-level method on a small random forget set, scored
against the untraining oracle, and on a whole concept, scored against the unlearning oracle.

    python bench/untrain_table.py --out docs/results/untrain_table.json --md docs/results/untrain_table.md

Each row runs one method with its toy settings (what `erase data --forget SET --method M` runs)
from a fresh copy of the toy model, measures it on the same probes as the original and the oracle
(same samples, noise and timesteps, as `erase data` does), and scores every colour on held-out
prompts and seeds with the toy CLIP. ``--methods 'ft,ft[lr=3e-4,steps=100]'`` runs variants of a
method's settings next to each other: that is how the toy settings were tuned.
"""

from __future__ import annotations

import argparse
import json
import re
import time

import torch

from erase.concepts import load_concepts
from erase.data import resolve_sets, toy_ids
from erase.errors import EraseError
from erase.judges import load_judge
from erase.methods import REGISTRY, names
from erase.methods.base import EraseInputs
from erase.models import load_pipeline
from erase.recipes.oracle import forget_oracle
from erase.score import score_concepts
from erase.seeds import EVAL_IMAGE_SEEDS, split_of
from erase.specs import parse_seeds, parse_sets
from erase.stats import rate
from erase.train import NonFiniteLoss
from erase.unlearn import run_method
from erase.untrain import make_probes, measure, oracle_kind

COLORS = ["red", "green", "blue", "yellow"]
FORGETS = "toy:color=red:n=32;toy:color=red"


def parse_variant(text: str) -> tuple[str, dict]:
    """``"rl[alpha=1,lr=3e-4]"`` -> ``("rl", {"alpha": 1, "lr": 3e-4})``."""
    name, _, rest = text.strip().partition("[")
    overrides = parse_sets([item for item in rest.rstrip("]").split(",") if item.strip()])
    if name not in REGISTRY:
        raise EraseError(f"unknown method {name!r}")
    return name, overrides


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default=",".join(names("untraining")), help="NAME or NAME[k=v,...]")
    p.add_argument("--forgets", default=FORGETS, help="forget specs separated by ;")
    p.add_argument("--retain", default="toy:rest:n=256", help="the retain set (erase data's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--eval-seeds",
        default=f"{EVAL_IMAGE_SEEDS[0]}-{EVAL_IMAGE_SEEDS[1]}",
        help="image seeds for the colour accuracies (evaluation seeds; tuning runs pass 1000-1999)",
    )
    p.add_argument("--repeats", type=int, default=8, help="noise draws per probed sample (erase data: 8)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", help="write the JSON here")
    p.add_argument("--md", help="write the markdown table here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    variants = [parse_variant(m) for m in re.findall(r"[\w-]+(?:\[[^\]]*\])?", args.methods)]
    book, judge = load_concepts("toy"), load_judge("toy", device="cpu")
    seeds = parse_seeds(args.eval_seeds)

    def colours(pipe) -> dict[str, dict]:
        res = score_concepts(
            pipe, judge, [book.get(c) for c in COLORS], seeds=seeds, steps=10, progress=False
        )
        keep = ("accuracy", "hits", "n", "ci95")
        return {c: {k: r[k] for k in keep} for c, r in res["concepts"].items()}

    rows = []
    for spec in args.forgets.split(";"):
        rows += forget_set_rows(spec, variants, args, colours)
    if args.out:
        with open(args.out, "w") as f:
            record = {"args": vars(args), "seed_split": split_of(seeds), "rows": rows}
            json.dump(record, f, indent=2)
    table = markdown(rows)
    print(table)
    if args.md:
        with open(args.md, "w") as f:
            f.write(table + "\n")


def forget_set_rows(spec: str, variants: list[tuple[str, dict]], args, colours) -> list[dict]:
    """The oracle's row, the original's, then one per method variant, for one forget set."""
    # 1. Sets, probes and the oracle this forget set is scored against (as erase data picks it).
    forget, retain = resolve_sets(spec, args.retain, seed=args.seed)
    oracle_dir, key = forget_oracle(spec, toy_ids(spec, seed=args.seed))
    if oracle_dir is None:
        raise EraseError(f"no oracle for {spec} ({key}); build it with `erase toy oracle --forget '{spec}'`")
    oracle_spec = f"toy+{oracle_dir}"
    base = load_pipeline("toy", device="cpu")
    probes = make_probes(base, forget, retain, seed=args.seed, repeats=args.repeats)
    oracle = load_pipeline(oracle_spec, device="cpu")
    target = probes["forget"].predictions(oracle.unet, oracle.scheduler)
    common = {
        "forget": spec,
        "forget_samples": len(forget.images),
        "probed_forget_samples": len(probes["forget"].enc),
        "oracle": key,
        "oracle_kind": oracle_kind(oracle_spec),
    }
    rows = []

    def row(name: str, pipe, reference: float | None = None, **extra) -> dict:
        r = common | {"method": name} | measure(pipe.unet, pipe.scheduler, probes, target)
        if reference:
            r["ratio_to_original"] = r["distance_to_oracle"] / reference
        r |= {"colours": colours(pipe)} | extra
        rows.append(r)
        print(json.dumps(r), flush=True)
        return r

    row("oracle", oracle)
    reference = row("original", base)["distance_to_oracle"]
    # 2. One fresh toy model per method.
    for name, overrides in variants:
        pipe = load_pipeline("toy", device="cpu")
        t0 = time.time()
        stopped, log, cfg = None, {}, None
        try:
            out = run_method(
                pipe,
                name,
                EraseInputs(forget=forget, retain=retain),
                overrides=overrides,
                seed=args.seed,
                progress=False,
            )
            log, cfg = out.log, out.config.__dict__
        except NonFiniteLoss as e:  # the guard kept the last good weights: measure those
            stopped = str(e)
        label = name + (f"[{','.join(f'{k}={v}' for k, v in overrides.items())}]" if overrides else "")
        extra = {"seconds": round(time.time() - t0, 1), "stopped": stopped, "config": cfg}
        if "verdict" in log:
            extra |= {"verdict": log["verdict"], "kappa_mean": sum(log["kappa"]) / len(log["kappa"])}
        row(label, pipe, reference, **extra)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| forget set (oracle) | method | forget loss | retain loss | MIA AUC | distance to oracle "
        "(x original) | red acc. | other colours acc. | time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        acc = r["colours"]
        hits = sum(acc[c]["hits"] for c in COLORS if c != "red")
        n = sum(acc[c]["n"] for c in COLORS if c != "red")
        ratio = f" ({r['ratio_to_original']:.1f}x)" if "ratio_to_original" in r else ""
        time_ = f"{r['seconds']:.0f} s" if "seconds" in r else "-"
        note = " (guard stop)" if r.get("stopped") else ""
        lines.append(
            f"| {r['forget']} ({r['oracle_kind']}) | {r['method']}{note} | {r['forget_loss']:.3f} | "
            f"{r['retain_loss']:.3f} | {r['mia_auc']:.2f} | {r['distance_to_oracle']:.4f}{ratio} | "
            f"{rate(acc['red']['hits'], acc['red']['n'])} | {rate(hits, n)} | {time_} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
