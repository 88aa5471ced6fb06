"""Seed 003's descent-ascent case, without a diffusion model: one run per forget-set size."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from erase.jobs.base import JobConfig, JobResult, option, start_record


@dataclass(frozen=True, kw_only=True)
class Seed003Job(JobConfig):
    """Seed 003's logistic-regression case: descent-ascent against retraining, per forget-set size."""

    COMMAND = "seed003"

    out: Path = option(help="folder to write record.json into")
    forget: tuple[tuple[int, int], ...] = option(
        ((30, 10), (80, 10)), "forget-set sizes (one run each)", cli=False
    )

    def check(self) -> None:
        from erase.jobs.base import FieldError

        if any(a < 0 or b < 0 for a, b in self.forget):
            raise FieldError("forget", f"sizes must be 0 or more, got {list(self.forget)}")


def run(cfg: Seed003Job) -> JobResult:
    from erase.io import atomic_dir, write_json
    from erase.recipes.seed003 import run_case

    rec = start_record(cfg)
    cases = [run_case(tuple(f)) for f in cfg.forget]
    for c in cases:
        if c["diverged"]:
            print(f"|F| = {c['forget']}: descent-ascent diverged; {c['diverged']}")
        else:
            print(
                f"|F| = {c['forget']}: descent-ascent ends at {c['descent_ascent']}, "
                f"{c['descent_ascent_distance']} from the retrained model vs {c['original_distance']} "
                f"for the original ({c['ratio']}x farther)"
            )
    with atomic_dir(cfg.out) as tmp:
        record = rec.finish({"cases": cases})
        write_json(tmp / "record.json", record)
    return JobResult(cfg.out, record)
