"""The README's robustness table: erasures x attacks, gathered from the `erase attack` records of a
study folder (pipelines/toy-robustness.yaml).

    python bench/robustness_table.py runs/toy-robustness --out docs/results/robustness_toy.json
    python bench/robustness_table.py runs/toy-robustness runs/toy-robustness-seed1 \
        runs/toy-robustness-seed2 --out docs/results/robustness_toy_seeds.json

One row per erasure, one column per attack: the erased model's success (images in which the judge
sees the concept, hits/n with a Wilson 95% interval) and the verdict against the base model and the
oracle; above them the base model's row, what the attacks with a starting point draw from it
untrained, and the oracle's row. The base model and the oracle are attacked once (the study's first
run) and reused by the others (`--calibration`); the script checks that every run read the same
calibration, and recomputes each verdict from its counts (it must give the record's outcome). The
JSON keeps each record whole (config, seeds, versions, prompt hashes).

Given several study folders (the same study with other attack seeds: `erase run
pipelines/toy-robustness.yaml --set attack.seed=1 --out runs/toy-robustness-seed1`), each cell pools
the images of every attack seed (hits/n with a Wilson interval: the images of one attack run are not
independent of each other, so read the interval as a floor on the uncertainty) and counts the
seeds by verdict ("circumvented 3/3"); each seed's own counts are in the JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from erase.delta import read_meta
from erase.report.console import markdown_table
from erase.stats import shown

CALIBRATION_ROWS = (
    ("base", "base model"),
    ("start", "base model, attack untrained"),
    ("oracle", "oracle (never saw a cross)"),
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "study",
        type=Path,
        nargs="+",
        help="study folders whose runs hold attack/attack.json (one per attack seed)",
    )
    ap.add_argument("--out", type=Path, help="write the JSON here (and the table beside it, .md)")
    args = ap.parse_args()
    if len(args.study) > 1:
        return _seeds(args.study, args.out)
    study = args.study[0]
    attacks, calibration, rows, paths = gather(study)
    body = [[label, *(shown(calibration.get((a, m))) for a in attacks)] for m, label in CALIBRATION_ROWS]
    for r in rows:
        cells = [r["cells"][a] for a in attacks]
        body.append([r["method"], *(_cell(c) for c in cells)])
    table = markdown_table(["model", *attacks], body)
    print(table)
    if args.out:
        whole = {
            "command": f"python bench/robustness_table.py {study}",
            "attacks": attacks,
            "calibration": {f"{a} on {m}": v for (a, m), v in calibration.items()},
            "rows": rows,
            "records": {str(p.relative_to(study)): json.loads(p.read_text()) for p in paths},
        }
        args.out.write_text(json.dumps(whole, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(table + "\n")


def gather(study: Path):
    """One study folder's attacks, calibration (base model, oracle), rows and record paths."""
    paths = sorted(study.glob("*/attack/attack.json"), key=lambda p: p.stat().st_mtime)
    if not paths:
        raise SystemExit(f"{study} holds no */attack/attack.json; run the study first")
    records = {p.parent.parent.name: json.loads(p.read_text()) for p in paths}
    attacks = [a["attack"] for a in next(iter(records.values()))["results"]["attacks"]]
    calibration, rows = {}, []
    for run, record in records.items():
        res = record["results"]
        got = {a["attack"]: a for a in res["attacks"]}
        erased = {name: a["erased"]["success"] for name, a in got.items()}
        if list(got) != attacks:
            raise SystemExit(f"{run} ran {list(got)}, the first run {attacks}: not one table")
        for name, a in got.items():
            for model in ("base", "oracle"):
                seen = calibration.setdefault((name, model), a[model]["success"])
                if seen != a[model]["success"]:
                    raise SystemExit(f"{run}: {name} on the {model} model differs from the other runs'")
            start = a["base"].get("start", {}).get("success")
            if start is not None:
                calibration.setdefault((name, "start"), start)
        rows.append(
            {
                "run": run,
                "method": res["method"],
                "kind": read_meta(Path(record["config"]["delta"])).get("kind"),
                "delta": record["config"]["delta"],
                "cells": {
                    name: {
                        "success": a["erased"]["success"],
                        "verdict": _verdict(run, name, a, erased),
                        "found": {
                            k: a["erased"][k] for k in ("words", "token", "prompts") if k in a["erased"]
                        },
                        "budget": a["erased"]["budget"],
                    }
                    for name, a in got.items()
                },
                "seed": record["config"]["seed"],
                "wall_seconds": record.get("wall_seconds"),
            }
        )
    return attacks, calibration, rows, paths


def _pooled(successes: list[dict]) -> dict:
    from erase.stats import wilson

    hits, n = sum(s["hits"] for s in successes), sum(s["n"] for s in successes)
    return {"hits": hits, "n": n, "accuracy": hits / n, "ci95": list(wilson(hits, n))}


def _seeds(studies: list[Path], out: Path | None) -> None:
    """The table over attack seeds: pooled counts per cell, and the seeds counted by verdict."""
    from collections import Counter

    gathered = [gather(s) for s in studies]
    attacks = gathered[0][0]
    seeds = [{r["seed"] for r in g[2]} for g in gathered]
    if any(len(s) != 1 for s in seeds) or len({next(iter(s)) for s in seeds}) != len(studies):
        raise SystemExit(f"each study folder must hold one attack seed, each another: got {seeds}")
    runs = [[r["run"] for r in g[2]] for g in gathered]
    if any(g[0] != attacks or sorted(r) != sorted(runs[0]) for g, r in zip(gathered, runs)):
        raise SystemExit("the study folders ran different runs or attacks: not one table")
    by_run = [{r["run"]: r for r in g[2]} for g in gathered]
    cal = {key: _pooled([g[1][key] for g in gathered]) for key in gathered[0][1]}
    body = [[label, *(shown(cal.get((a, m))) for a in attacks)] for m, label in CALIBRATION_ROWS]
    rows = []
    for run in runs[0]:
        cells = {}
        for a in attacks:
            per_seed = [b[run]["cells"][a] for b in by_run]
            outcomes = Counter(c["verdict"]["outcome"] for c in per_seed)
            cells[a] = {
                "success": _pooled([c["success"] for c in per_seed]),
                "outcomes": dict(outcomes),
                "per_seed": [
                    {"seed": b[run]["seed"], "success": c["success"], "verdict": c["verdict"]}
                    for b, c in zip(by_run, per_seed)
                ],
            }
        rows.append({"run": run, "method": by_run[0][run]["method"], "cells": cells})
        body.append([by_run[0][run]["method"], *(_seeds_cell(cells[a], len(studies)) for a in attacks)])
    table = markdown_table(["model", *attacks], body)
    print(table)
    if out:
        whole = {
            "command": "python bench/robustness_table.py " + " ".join(map(str, studies)),
            "attack_seeds": [next(iter(s)) for s in seeds],
            "attacks": attacks,
            "calibration": {f"{a} on {m}": v for (a, m), v in cal.items()},
            "calibration_per_seed": [{f"{a} on {m}": v for (a, m), v in g[1].items()} for g in gathered],
            "rows": rows,
            "studies": [str(s) for s in studies],
        }
        out.write_text(json.dumps(whole, indent=2) + "\n")
        out.with_suffix(".md").write_text(table + "\n")


def _seeds_cell(c: dict, seeds: int) -> str:
    said = ", ".join(f"{k} {v}/{seeds}" for k, v in sorted(c["outcomes"].items(), key=lambda kv: -kv[1]))
    return f"{shown(c['success'])}; {said}"


def _cell(c: dict) -> str:
    """Counts, interval and outcome; "not above plain" where the attack brings out no more than the
    erasure's own prompts do (nothing was hidden for it to find)."""
    text = f"{shown(c['success'])} {c['verdict']['outcome']}"
    plain = c["verdict"].get("against_plain")
    return text + ("" if plain is None or plain["beats"] else ", not above plain")


def _verdict(run: str, name: str, a: dict, erased: dict) -> dict:
    """The row's verdict recomputed from its counts by the current ``erase.attacks.api.read`` (a
    pure function of them), which must give the record's outcome."""
    from erase.attacks.api import controls_of, read

    v = read(name, {m: a[m] for m in ("base", "erased", "oracle")}, controls_of(name, erased))
    if v["outcome"] != a["verdict"]["outcome"]:
        raise SystemExit(
            f"{run}: {name}'s verdict is {a['verdict']['outcome']!r}, its counts give {v['outcome']!r}"
        )
    return v


if __name__ == "__main__":
    main()
