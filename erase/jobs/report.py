"""``erase report``: report.html and report.md of a run folder, from the records its stages wrote."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from erase.errors import EraseError
from erase.jobs.base import JobConfig, JobResult, option


@dataclass(frozen=True, kw_only=True)
class ReportJob(JobConfig):
    """Write report.html and report.md for a run folder."""

    COMMAND = "report"

    run: Path = option(help="a run folder (erase run's, or one holding erase/ or untrain/)", positional=True)
    title: str | None = option(None, "the report's title (default: the run's name)")


def run(cfg: ReportJob) -> JobResult:
    from erase.report.html import write_report

    if not cfg.run.is_dir():
        raise EraseError(f"run folder {cfg.run} does not exist; pass the folder `erase run` wrote")
    html, md = write_report(cfg.run, title=cfg.title)
    print(f"report: {html}")
    return JobResult(cfg.run, {"html": str(html), "markdown": str(md)})
