"""``erase compare``: steps to resurgence of several relearning runs side by side, at each
optimizer's best learning rate, and against an oracle's when given."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from erase.errors import EraseError
from erase.jobs.base import JobConfig, JobResult, option


@dataclass(frozen=True, kw_only=True)
class CompareJob(JobConfig):
    """Steps to resurgence of several relearning runs side by side."""

    COMMAND = "compare"

    runs: tuple[str, ...] = option(
        help="relearning folders (or erase runs holding relearn/)", positional=True
    )
    oracle: str | None = option(None, "the relearning folder of an oracle (a model that never learned it)")
    out: Path | None = option(None, "also write compare.md and compare.json here")
    overwrite: bool = option(False, "replace a non-empty output folder")

    def check(self) -> None:
        if not self.runs:
            raise EraseError("compare needs at least one relearning folder")


def relearn_folder(spec: str) -> Path:
    p = Path(spec)
    for cand in (p, p / "relearn"):
        if (cand / "relearn.json").is_file():
            return cand
    raise EraseError(f"{spec} holds no relearn.json; run `erase relearn RUN` first")


def _cells(label: str, res: dict, optimizers: list[str], oracle: dict | None) -> dict:
    from erase.relearn import choose_lr, format_range, resurgence_ratio, row_resurgence

    c = res["concept"]
    cells = {"method": label, "concept": c}
    cells["original"] = f"{res['original']['accuracy'][c]:.2f}"
    cells["erased"] = f"{res['runs'][0]['curve'][0]['accuracy'][c]:.2f}"
    for opt in optimizers:
        rows = [row for row in res["summary"] if row["optimizer"] == opt]
        if not rows:
            cells[opt] = cells[f"{opt} / oracle"] = "not run"
            continue
        best = choose_lr(rows)  # the attacker's best learning rate, by the sweep's rule
        cells[opt] = f"{row_resurgence(best)} ({format_range(best)}) @ lr {best['lr']:g}"
        if oracle:
            match = [o for o in oracle["summary"] if o["optimizer"] == opt and o["lr"] == best["lr"]]
            cells[f"{opt} / oracle"] = resurgence_ratio(best, match[0] if match else None)
    return cells


def run(cfg: CompareJob) -> JobResult:
    from erase.io import atomic_dir, check_writable, write_json
    from erase.report.console import markdown_table

    folders = [relearn_folder(r) for r in cfg.runs]
    oracle = (
        json.loads((relearn_folder(cfg.oracle) / "relearn.json").read_text())["results"]
        if cfg.oracle
        else None
    )
    if cfg.out:
        check_writable(cfg.out, cfg.overwrite)
    records = [json.loads((f / "relearn.json").read_text())["results"] for f in folders]
    optimizers = list(dict.fromkeys(row["optimizer"] for r in records for row in r["summary"]))
    header = ["method", "concept", "original", "erased", *optimizers]
    header += [f"{o} / oracle" for o in optimizers] if oracle else []
    labelled = [(r["method"], r) for r in records] + (
        [(f"oracle ({oracle['method']})", oracle)] if oracle else []
    )
    table = [_cells(label, res, optimizers, oracle) for label, res in labelled]
    text = markdown_table(header, [[cells.get(h, "") for h in header] for cells in table])
    print("steps to resurgence: median over relearning seeds (range over seeds), at each optimizer's best lr")
    if oracle:
        print(
            "x / oracle: the same attack's steps on a model that never learned the concept; ~1 deep, << 1 hidden"
        )
    print(text)
    if cfg.out:
        with atomic_dir(cfg.out) as tmp:
            (tmp / "compare.md").write_text(text + "\n")
            write_json(
                tmp / "compare.json",
                {"runs": [str(f) for f in folders], "oracle": cfg.oracle, "table": table},
            )
    return JobResult(cfg.out, {"table": table})
