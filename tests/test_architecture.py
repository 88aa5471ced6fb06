"""The shape docs/architecture.md promises: a thin CLI, short jobs, layers that import downward
(`lint-imports`, in .ci/run), one copy of each default."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

import erase.jobs as jobs
from erase.jobs.base import field_default

ROOT = Path(__file__).resolve().parent.parent


def test_the_cli_is_a_thin_shell():
    assert len((ROOT / "erase/cli.py").read_text().splitlines()) < 300


@pytest.mark.parametrize("path", sorted((ROOT / "erase/jobs").glob("*.py")), ids=lambda p: p.name)
def test_no_job_function_over_80_lines(path):
    tree = ast.parse(path.read_text())
    long = [
        f"{n.name} ({n.end_lineno - n.lineno + 1} lines)"
        for n in ast.walk(tree)
        if isinstance(n, ast.FunctionDef) and n.end_lineno - n.lineno + 1 > 80
    ]
    assert not long, long


def test_the_relearning_defaults_live_in_one_place():
    from erase.optim import DEFAULT_LRS
    from erase.relearn import RelearnConfig
    from erase.train import OPTIMIZERS

    assert set(DEFAULT_LRS) == set(OPTIMIZERS)  # every optimizer the loop knows has a default rate
    assert all(field_default(f) is dataclasses.MISSING for f in dataclasses.fields(RelearnConfig))
    job = jobs.RelearnJob(run="x")
    assert job.optimizers == {"sgd": DEFAULT_LRS["sgd"], "adam": DEFAULT_LRS["adam"]}


def test_every_job_rebuilds_from_its_command_line():
    """The record's argv reruns the job: the CLI's parser reads it back into the same config."""
    from erase.cli import build_parser, config_from_args

    cases = [
        jobs.ConceptJob(
            concept="red", method="uce", anchor="a blue {shape}", eval_seeds="1000-1001", set={"lam": 0.1}
        ),
        jobs.UntrainJob(forget="toy:color=red:n=8", method="ga", steps=3, score="red,blue"),
        jobs.RelearnJob(
            run="runs/x", optimizers={"sgd": [0.03, 0.1], "adam": [1e-3]}, seeds=[0], snr_gamma=5
        ),
        jobs.AuditJob(run="runs/x", delta=("oracle=runs/o",), no_relearned=True, seeds="1000"),
        jobs.GenerateJob(prompt=("a red circle", "a blue square"), seeds="0-3"),
        jobs.ToyTrainJob(out=Path("w"), exclude=("color=red",), exclude_ids="1-3", stages="unet"),
        jobs.CompareJob(runs=("a", "b"), oracle="o"),
    ]
    parser = build_parser()
    for cfg in cases:
        assert config_from_args(parser.parse_args(jobs.command_line(cfg))) == cfg
