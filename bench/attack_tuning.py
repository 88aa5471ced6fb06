"""Tuning an attack's toy settings on TUNING seeds, on the base model only (issue 18).

An attack must bring the concept out of the model that learned it; how hard it then tries on an
erasure is its budget. So its rate is chosen where it must work, the base model, never on an erased
model or the oracle (that would tune it to the answer). Every setting of the grid runs the attack
with a tuning attack seed (100-199) and draws its prompts under tuning image seeds (1000-1999).

Selection rule, fixed before the run: the setting with the highest base-model success; ties go to
the lowest mean training loss over the last quarter of the steps; the sweep brackets the choice only
if the chosen rate is not at either end of the grid (else it is extended that way and rerun).

    python bench/attack_tuning.py --attack inversion --concept red --lrs 0.003,0.01,0.03,0.1 \\
        --steps 150 --out docs/results/inversion_tuning.json
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
import yaml

from erase.attacks import get_attack
from erase.attacks.api import success
from erase.concepts import load_concepts
from erase.models import load_judge, load_pipeline
from erase.relearn import generated_examples
from erase.seeds import split_of
from erase.specs import parse_seeds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--attack", default="inversion")
    ap.add_argument("--concept", default="red")
    ap.add_argument("--lrs", default="0.003,0.01,0.03,0.1")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--set", action="append", default=[], help="another attack setting NAME=VALUE")
    ap.add_argument("--seed", type=int, default=100, help="attack seed (tuning: 100-199)")
    ap.add_argument("--image-seeds", default="1000-1001", help="image seeds (tuning: 1000-1999)")
    ap.add_argument("--examples", type=int, default=16)
    ap.add_argument("--eval-steps", type=int, default=10)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(2)
    seeds = parse_seeds(args.image_seeds)
    if split_of(seeds) != "tuning" or split_of([args.seed], "relearn") != "tuning":
        raise SystemExit("tune on tuning seeds: image seeds 1000-1999, attack seed 100-199 (erase.seeds)")
    attack = get_attack(args.attack)
    target = load_concepts("toy").get(args.concept)
    pipe, judge = load_pipeline("toy", device="cpu"), load_judge("toy", device="cpu")
    examples = generated_examples(pipe, target.prompts, args.examples, seed=args.seed)
    extra = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    rows = []
    for lr in [float(x) for x in args.lrs.split(",")]:
        cfg = attack.config({"lr": lr, "steps": args.steps} | extra, toy=True)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.time()
            found = attack.module.run(pipe, examples, target, cfg, seed=args.seed, out=Path(tmp))
            seconds = time.time() - t0
            res = success(pipe, judge, target, attack.module, found, seeds=seeds, steps=args.eval_steps)
        res.pop("images")
        rows.append(
            {
                "lr": lr,
                "steps": args.steps,
                "base_success": {k: res[k] for k in ("hits", "n", "ci95")},
                "loss": found["loss"],
                "attack_seconds": round(seconds, 1),
            }
        )
        print(json.dumps(rows[-1]))
    best = max(rows, key=lambda r: (r["base_success"]["hits"], -r["loss"]["last_quarter_mean"]))
    ends = best is rows[0] or best is rows[-1]
    record = {
        "command": "python bench/attack_tuning.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("out", "set"))
        + "".join(f" --set {kv}" for kv in args.set),
        "attack": args.attack,
        "concept": args.concept,
        "config": vars(attack.config(extra, toy=True)),
        "image_seeds": seeds,
        "attack_seed": args.seed,
        "rule": "highest base success; ties: lowest mean loss over the last quarter of the steps",
        "rows": rows,
        "chosen": {"lr": best["lr"], "at_an_end_of_the_grid": ends},
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
    }
    print(json.dumps(record["chosen"]))
    if args.out:
        args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
