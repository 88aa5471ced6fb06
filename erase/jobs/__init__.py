"""One typed job per thing a user does. The CLI, pipeline files, notebooks and bench scripts call these.

Each job is a frozen config (``erase.jobs.base.JobConfig``: the only copy of its defaults, checked
on construction) and a function that runs it: check the inputs that need no model, load, compute,
write the outputs and the record together, return a ``JobResult``::

    from erase.jobs import ConceptJob, run
    result = run(ConceptJob(concept="red", method="uce", anchor="a blue {shape}", out=Path("runs/uce")))
    result.record["results"]["after"]
"""

from __future__ import annotations

from collections.abc import Callable

from erase.jobs import (
    apply,
    attack,
    audit,
    compare,
    concept,
    export,
    generate,
    relearn,
    report,
    score,
    seed003,
    serve,
    toy,
    untrain,
)
from erase.jobs.apply import ApplyJob
from erase.jobs.attack import AttackJob
from erase.jobs.audit import AuditJob
from erase.jobs.base import JobConfig, JobResult, command_line
from erase.jobs.compare import CompareJob
from erase.jobs.concept import ConceptJob
from erase.jobs.export import ExportJob
from erase.jobs.generate import GenerateJob
from erase.jobs.relearn import RelearnJob
from erase.jobs.report import ReportJob
from erase.jobs.score import ScoreJob
from erase.jobs.seed003 import Seed003Job
from erase.jobs.serve import ServeJob
from erase.jobs.toy import ToyEvalJob, ToyOracleJob, ToyTrainJob
from erase.jobs.untrain import UntrainJob

# Config class -> the function that runs it. The CLI offers every entry whose COMMAND is set.
JOBS: dict[type[JobConfig], Callable[..., JobResult]] = {
    GenerateJob: generate.run,
    ScoreJob: score.run,
    ConceptJob: concept.run,
    UntrainJob: untrain.run,
    ApplyJob: apply.run,
    ExportJob: export.run,
    RelearnJob: relearn.run,
    AttackJob: attack.run,
    AuditJob: audit.run,
    CompareJob: compare.run,
    ReportJob: report.run,
    Seed003Job: seed003.run,
    ServeJob: serve.run,
    ToyTrainJob: toy.train,
    ToyOracleJob: toy.oracle,
    ToyEvalJob: toy.evaluate,
}


def run(cfg: JobConfig) -> JobResult:
    """Run a job from its config."""
    return JOBS[type(cfg)](cfg)


__all__ = [
    "JOBS",
    "ApplyJob",
    "AttackJob",
    "AuditJob",
    "CompareJob",
    "ConceptJob",
    "ExportJob",
    "GenerateJob",
    "JobConfig",
    "JobResult",
    "RelearnJob",
    "ReportJob",
    "ScoreJob",
    "Seed003Job",
    "ServeJob",
    "ToyEvalJob",
    "ToyOracleJob",
    "ToyTrainJob",
    "UntrainJob",
    "command_line",
    "run",
]
