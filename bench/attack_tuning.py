"""Tuning an attack's toy settings on TUNING seeds, on the base model only (issue 18).

An attack must bring the concept out of the model that learned it; how hard it then tries on an
erasure is its budget. So its rate is chosen where it must work, the base model, never on an erased
model or the oracle (that would tune it to the answer). Every setting of the grid runs the attack
with a tuning attack seed (100-199) and draws its prompts under tuning image seeds (1000-1999).

The record starts with what the attack's starting point draws on its own (for inversion: the
prompts with the init word in the token's place, no training): success is only the attack's where
it is above that.

Selection rule, fixed before the run (committed with this file, before the grid of 2026-12-07): the
setting with the highest base-model success; ties go to the lower ``t_min`` (closer to the source's
all timesteps), then to the lower rate. The grid brackets the choice only if neither the chosen rate
nor the chosen ``t_min`` is at an end of its grid that the rule could still improve on (else the
grid is extended that way and rerun); ``at_an_end_of_the_grid`` says which.

    python bench/attack_tuning.py --attack inversion --concept red --lrs 0.003,0.01,0.03,0.1 \\
        --t-mins 0,300,500,700 --steps 150 --image-seeds 1000-1003 \\
        --out docs/results/inversion_tuning.json

An attack without a rate (Ring-A-Bell) is tuned over the settings it has, ``--grid NAME=V1,V2,...``
(repeatable; the rule is the same: the highest base-model success, ties to the lower value of the
first grid, then of the next):

    python bench/attack_tuning.py --attack ring-a-bell --concept cross --judge toy-fit --seed 100-102 \\
        --grid eta=1,3,6,10 --grid length=4,8,14 --image-seeds 1000-1002 \\
        --out docs/results/ring_a_bell_tuning.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
import yaml

from erase.attacks import get_attack
from erase.attacks.api import from_the_start, success
from erase.concepts import load_concepts
from erase.judges import load_judge
from erase.models import load_pipeline
from erase.relearn import generated_examples
from erase.seeds import split_of
from erase.specs import parse_seeds
from erase.stats import wilson


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--attack", default="inversion")
    ap.add_argument("--concept", default="red")
    ap.add_argument("--lrs", default="0.003,0.01,0.03,0.1")
    ap.add_argument("--t-mins", default="0", help="comma-separated t_min values (attacks that have t_min)")
    ap.add_argument("--steps", type=int, default=150, help="the attack's steps (attacks that have steps)")
    ap.add_argument(
        "--grid",
        action="append",
        default=[],
        help="NAME=V1,V2,...: a setting to tune instead of --lrs/--t-mins (repeatable; ties go to the "
        "lower value of the first grid given, then of the next)",
    )
    ap.add_argument("--set", action="append", default=[], help="another attack setting NAME=VALUE")
    ap.add_argument(
        "--seed",
        default="100",
        help="attack seeds (tuning: 100-199), e.g. 100-102: each setting runs once per seed (its own "
        "examples and search) and its success is the sum over them",
    )
    ap.add_argument("--image-seeds", default="1000-1001", help="image seeds (tuning: 1000-1999)")
    ap.add_argument("--examples", type=int, default=16)
    ap.add_argument("--eval-steps", type=int, default=10)
    ap.add_argument(
        "--judge", default="toy", help="the judge that reads the base model's images (toy-fit for a shape)"
    )
    ap.add_argument("--out", type=Path)
    ap.add_argument(
        "--extend",
        type=Path,
        help="an earlier record of this bench with the same settings but other grid values: the rule "
        "is applied to its rows and this run's together, and --out holds both",
    )
    args = ap.parse_args()
    torch.set_num_threads(2)
    seeds = parse_seeds(args.image_seeds)
    attack_seeds = parse_seeds(args.seed)
    if split_of(seeds) != "tuning" or split_of(attack_seeds, "relearn") != "tuning":
        raise SystemExit("tune on tuning seeds: image seeds 1000-1999, attack seed 100-199 (erase.seeds)")
    attack = get_attack(args.attack)
    target = load_concepts("toy").get(args.concept)
    pipe, judge = load_pipeline("toy", device="cpu"), load_judge(args.judge, device="cpu")
    examples = {s: generated_examples(pipe, target.prompts, args.examples, seed=s) for s in attack_seeds}
    extra = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    earlier = json.loads(args.extend.read_text()) if args.extend else None
    if earlier is not None:
        same = {
            "attack": args.attack,
            "concept": args.concept,
            "image_seeds": seeds,
            "attack_seed": attack_seeds if len(attack_seeds) > 1 else attack_seeds[0],
            "judge": args.judge,
        }
        # A record from before --judge was read by the toy CLIP judge.
        differ = [k for k, v in same.items() if earlier.get(k, "toy" if k == "judge" else None) != v]
        if differ or earlier["config"] != vars(attack.config(extra, toy=True)):
            raise SystemExit(
                f"--extend {args.extend}: not the same settings ({', '.join(differ) or 'config'})"
            )
    start = _starting_point(
        attack.module, pipe, judge, target, attack.config(extra, toy=True), seeds, args.eval_steps
    )
    print(json.dumps({"starting_point": start}))
    if args.grid:
        grids = [
            (k, [yaml.safe_load(v) for v in vs.split(",")]) for k, vs in (g.split("=", 1) for g in args.grid)
        ]
    else:  # the order is the tie-break's: the lower t_min first (closer to the source), then the rate
        grids = [
            ("t_min", [int(x) for x in args.t_mins.split(",")]),
            ("lr", [float(x) for x in args.lrs.split(",")]),
        ]
    names = [n for n, _ in grids]
    fixed = {"steps": args.steps} if "steps" in attack.settings else {}
    rows = []
    for combo in itertools.product(*(values for _, values in grids)):
        setting = dict(zip(names, combo))
        cfg = attack.config(setting | fixed | extra, toy=True)
        per_seed, seconds, losses = [], 0.0, []
        for seed in attack_seeds:
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.time()
                found = attack.module.run(pipe, examples[seed], target, cfg, seed=seed, out=Path(tmp))
                seconds += time.time() - t0
                res = success(pipe, judge, target, attack.module, found, seeds=seeds, steps=args.eval_steps)
            per_seed.append(
                {
                    "seed": seed,
                    "hits": res["hits"],
                    "n": res["n"],
                    "found": found.get("words") or found.get("prompts"),
                }
            )
            losses.append(found.get("loss"))  # Ring-A-Bell searches without a loss
        hits, n = sum(p["hits"] for p in per_seed), sum(p["n"] for p in per_seed)
        rows.append(
            setting
            | fixed
            | {
                "base_success": {"hits": hits, "n": n, "ci95": list(wilson(hits, n))},
                "per_seed": per_seed,
                "loss": losses[0] if len(losses) == 1 else losses,
                "attack_seconds": round(seconds / len(attack_seeds), 1),
            }
        )
        print(json.dumps(rows[-1]))
    if earlier is not None:
        rows = earlier["rows"] + rows
    grids = [(n, sorted({r[n] for r in rows})) for n in names]
    best = max(rows, key=lambda r: (r["base_success"]["hits"], *(-r[n] for n in names)))
    ends = [
        name
        for name, grid in grids
        if len(grid) > 1
        and best[name] in (grid[0], grid[-1])
        and _could_improve(rows, best, name, grid, names)
    ]
    command = (
        "python bench/attack_tuning.py "
        + " ".join(
            f"--{k.replace('_', '-')} {v}"
            for k, v in vars(args).items()
            if k not in ("out", "set", "extend", "grid") and not (args.grid and k in ("lrs", "t_mins"))
        )
        + "".join(f" --set {kv}" for kv in args.set)
        + "".join(f" --grid {g}" for g in args.grid)
    )
    record = {
        "command": command,
        "commands": (earlier.get("commands") or [earlier["command"]] if earlier else []) + [command],
        "attack": args.attack,
        "concept": args.concept,
        "config": vars(attack.config(extra, toy=True)),
        "image_seeds": seeds,
        "attack_seed": attack_seeds if len(attack_seeds) > 1 else attack_seeds[0],
        "judge": args.judge,
        "rule": "highest base success; ties: the lower t_min, then the lower rate"
        if names == ["t_min", "lr"]
        else "highest base success; ties: the lower " + ", then the lower ".join(names),
        "starting_point": start,
        "rows": rows,
        "chosen": {n: best[n] for n in names} | {"at_an_end_of_the_grid": ends},
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
    }
    print(json.dumps(record["chosen"]))
    if args.out:
        args.out.write_text(json.dumps(record, indent=2) + "\n")


def _starting_point(module, pipe, judge, target, cfg, seeds, steps: int) -> dict | None:
    begin = from_the_start(pipe, judge, target, module, cfg, seeds=seeds, steps=steps)
    if begin is None:
        return None
    res = begin.pop("success")
    return {"example_prompt": begin.pop("prompts")[0]} | begin | {k: res[k] for k in ("hits", "n", "ci95")}


def _could_improve(rows, best, name: str, grid, names) -> bool:
    """Whether the chosen value sits at an end of its grid that beats its neighbour inside the grid
    (then a value beyond that end might do better still: extend the grid)."""
    inner = grid[1] if best[name] == grid[0] else grid[-2]
    same = [r for r in rows if all(r[k] == best[k] for k in names if k != name) and r[name] == inner]
    return not same or same[0]["base_success"]["hits"] < best["base_success"]["hits"]


if __name__ == "__main__":
    main()
