"""The README's attack table, gathered from the `erase attack` records of a study folder.

    python bench/attack_table.py runs/toy-attacks --out docs/results/attacks_toy.json

One row per erasure x attack: what the attack's untrained starting point draws on the base model, the
attack's success on the base model, the erased model and the oracle (hits/n with Wilson intervals), the verdict, what it found (token and an example prompt), its
budget and time. The JSON keeps each record whole (config, seeds, versions, prompt hashes).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from erase.report.console import markdown_table
from erase.report.html import ATTACK_HEADER, attack_rows


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
        for row in attack_rows(record):
            body.append(row.pop("cells"))
            rows.append({"run": path.parent.parent.name} | row | {"wall_seconds": record.get("wall_seconds")})
    table = markdown_table(ATTACK_HEADER, body)
    print(table)
    if args.out:
        whole = {"command": "python bench/attack_table.py " + str(args.study), "rows": rows}
        whole["records"] = {str(p.relative_to(args.study)): json.loads(p.read_text()) for p in records}
        args.out.write_text(json.dumps(whole, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(table + "\n")


if __name__ == "__main__":
    main()
