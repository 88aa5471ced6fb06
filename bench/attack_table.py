"""The README's attack table, gathered from the `erase attack` records of a study folder.

    python bench/attack_table.py runs/toy-attacks --out docs/results/inversion_red.json

One row per erasure x attack: the attack's success on the base model, the erased model and the
oracle (hits/n with Wilson intervals), the verdict, what it found (token and an example prompt), its
budget and time. The JSON keeps each record whole (config, seeds, versions, prompt hashes).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from erase.attacks.api import shown
from erase.report.console import markdown_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", type=Path, help="a study folder whose runs hold attack/attack.json")
    ap.add_argument("--out", type=Path, help="write the JSON here (and the table beside it, .md)")
    args = ap.parse_args()
    records = sorted(args.study.glob("*/attack/attack.json"))
    if not records:
        raise SystemExit(f"{args.study} holds no */attack/attack.json; run the study first")
    rows, body = [], []
    for path in records:
        record = json.loads(path.read_text())
        res = record["results"]
        for a in res["attacks"]:
            row = {
                "run": path.parent.parent.name,
                "method": res["method"],
                "concept": res["concept"],
                "attack": a["attack"],
                "success": {m: a[m]["success"] for m in res["models"]},
                "verdict": a["verdict"],
                "token": a["erased"].get("token"),
                "example_prompt": a["erased"]["prompts"][0],
                "budget": a["erased"]["budget"],
                "wall_seconds": record.get("wall_seconds"),
            }
            rows.append(row)
            body.append(
                [row["method"], row["attack"]]
                + [shown(row["success"].get(m)) for m in ("base", "erased", "oracle")]
                + [row["verdict"]["outcome"], f"{row['budget']['seconds']:.0f} s"]
            )
    header = ["erasure", "attack", "base model", "erased model", "oracle", "verdict", "attack time"]
    table = markdown_table(header, body)
    print(table)
    if args.out:
        whole = {"command": "python bench/attack_table.py " + str(args.study), "rows": rows}
        whole["records"] = {str(p.relative_to(args.study)): json.loads(p.read_text()) for p in records}
        args.out.write_text(json.dumps(whole, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(table + "\n")


if __name__ == "__main__":
    main()
