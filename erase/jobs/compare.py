"""``erase compare``: steps to resurgence of several relearning runs side by side, at each
optimizer's best learning rate, and against an oracle's when given."""

from __future__ import annotations

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


def _cells(label: str, res: dict, optimizers: list[str], oracle: dict | None) -> dict:
    from erase.relearn import choose_lr, format_range, row_resurgence, verdict

    c = res["concept"]
    cells = {"method": label, "concept": c}
    cells["original"] = f"{res['original']['accuracy'][c]:.2f}"
    cells["erased"] = f"{res['runs'][0]['curve'][0]['accuracy'][c]:.2f}"
    for opt in optimizers:
        rows = [row for row in res["summary"] if row["optimizer"] == opt]
        if not rows:
            cells[opt] = cells[f"{opt}: verdict"] = "not run"
            continue
        best = choose_lr(rows)  # the attacker's best learning rate, by the sweep's rule
        cells[opt] = f"{row_resurgence(best)} ({format_range(best)}) @ lr {best['lr']:g}"
        same = [
            o for o in (oracle or {}).get("summary", []) if (o["optimizer"], o["lr"]) == (opt, best["lr"])
        ]
        # Without an oracle's row for it, the verdict says "uncalibrated".
        cells[f"{opt}: verdict"] = verdict(best, same[0] if same else None)["text"]
    return cells


def run(cfg: CompareJob) -> JobResult:
    from erase.io import atomic_dir, check_writable, write_json
    from erase.jobs.relearn import read_relearning
    from erase.report.console import markdown_table

    records = [read_relearning(r) for r in cfg.runs]
    given = read_relearning(cfg.oracle) if cfg.oracle else None
    if cfg.out:
        check_writable(cfg.out, cfg.overwrite)
    optimizers = list(dict.fromkeys(row["optimizer"] for r in records for row in r["summary"]))
    judged = given is not None or any(r.get("oracle") for r in records)
    header = ["method", "concept", "original", "erased", *optimizers]
    header += [f"{o}: verdict" for o in optimizers] if judged else []
    # Each run is judged against --oracle when given, else against the oracle it was calibrated on.
    labelled = [(r["method"], r, given if given is not None else r.get("oracle")) for r in records]
    if given is not None:
        labelled.append((f"oracle ({given['method']})", given, given))
    table = [_cells(label, res, optimizers, oracle) for label, res, oracle in labelled]
    text = markdown_table(header, [[cells.get(h, "") for h in header] for cells in table])
    print("steps to resurgence: median over relearning seeds (range over seeds), at each optimizer's best lr")
    if judged:
        print(
            "verdict: against the same attack on a model that never learned the concept "
            "(--oracle, or the oracle the run was calibrated on)"
        )
    print(text)
    if cfg.out:
        with atomic_dir(cfg.out) as tmp:
            (tmp / "compare.md").write_text(text + "\n")
            write_json(tmp / "compare.json", {"runs": list(cfg.runs), "oracle": cfg.oracle, "table": table})
    return JobResult(cfg.out, {"table": table})
