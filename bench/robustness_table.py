"""The README's robustness table: erasures x attacks, gathered from the `erase attack` records of a
study folder (pipelines/toy-robustness.yaml).

    python bench/robustness_table.py runs/toy-robustness --out docs/results/robustness_toy.json

One row per erasure, one column per attack: the erased model's success (images in which the judge
sees the concept, hits/n with a Wilson 95% interval) and the verdict against the base model and the
oracle; above them the base model's row, what the attacks with a starting point draw from it
untrained, and the oracle's row. The base model and the oracle are attacked once (the study's first
run) and reused by the others (`--calibration`); the script checks that every run read the same
calibration, and recomputes each verdict from its counts (it must give the record's outcome). The
JSON keeps each record whole (config, seeds, versions, prompt hashes).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from erase.delta import read_meta
from erase.report.console import markdown_table
from erase.stats import shown


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", type=Path, help="a study folder whose runs hold attack/attack.json")
    ap.add_argument("--out", type=Path, help="write the JSON here (and the table beside it, .md)")
    args = ap.parse_args()
    paths = sorted(args.study.glob("*/attack/attack.json"), key=lambda p: p.stat().st_mtime)
    if not paths:
        raise SystemExit(f"{args.study} holds no */attack/attack.json; run the study first")
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
                "wall_seconds": record.get("wall_seconds"),
            }
        )
    body = [["base model", *(shown(calibration.get((a, "base"))) for a in attacks)]]
    body.append(["base model, attack untrained", *(shown(calibration.get((a, "start"))) for a in attacks)])
    body.append(["oracle (never saw a cross)", *(shown(calibration.get((a, "oracle"))) for a in attacks)])
    for r in rows:
        cells = [r["cells"][a] for a in attacks]
        body.append([r["method"], *(_cell(c) for c in cells)])
    table = markdown_table(["model", *attacks], body)
    print(table)
    if args.out:
        whole = {
            "command": f"python bench/robustness_table.py {args.study}",
            "attacks": attacks,
            "calibration": {f"{a} on {m}": v for (a, m), v in calibration.items()},
            "rows": rows,
            "records": {str(p.relative_to(args.study)): json.loads(p.read_text()) for p in paths},
        }
        args.out.write_text(json.dumps(whole, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(table + "\n")


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
