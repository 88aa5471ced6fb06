"""Pipeline files: one YAML names the stages of a study, ``erase run FILE`` runs them into one folder.

A file is validated whole before anything runs: its YAML, every stage's fields and types, the
names it refers to (methods, optimizers, concepts, the concept file) and the order of the stages
(relearning needs an erasure before it). An error names the file, the field and what is allowed.

Each stage is one of the CLI's commands run in-process with the stage's fields as its options, so
a pipeline and the commands a user types go through the same code and write the same files:

- ``load``: the model every later stage uses;
- ``erase``: ``erase concept`` into RUN/erase/ (delta.safetensors, record.json);
- ``untrain``: ``erase data`` into RUN/untrain/;
- ``score``: the before/after scores of the edit (its record.json); without an edit, RUN/score/;
- ``relearn``: ``erase relearn`` into RUN/relearn/, saving the relearned weights when audited;
- ``audit``: ``erase audit`` into RUN/audit/;
- ``report``: RUN/report.html and RUN/report.md from everything the run wrote.

Stages write their outputs whole (each command does), and ``RUN/pipeline.json`` records which
stages are done; ``erase run FILE --resume`` skips those after a crash.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from erase.errors import EraseError

Seeds = str | list[Annotated[int, Field(ge=0)]]
PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]


class _Stage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoadStage(_Stage):
    """The model every later stage uses: ``toy``, a diffusers folder or a hub id."""

    model: str = "toy"
    device: str | None = None
    dtype: Literal["fp32", "fp16", "bf16"] | None = None


class EraseStage(_Stage):
    """Concept-level unlearning (``erase concept``)."""

    concept: str = Field(min_length=1)
    method: str = "esd-x"
    anchor: str = "default"
    preserve: list[str] | None = None
    steps: PositiveInt | None = None
    lr: PositiveFloat | None = None
    eta: float | None = None
    set: dict[str, Any] = {}
    seed: Annotated[int, Field(ge=0)] = 0


class UntrainStage(_Stage):
    """Data-level untraining (``erase data``)."""

    forget: str = Field(min_length=1)
    retain: str | None = None
    method: str = "hamu"
    steps: PositiveInt | None = None
    lr: PositiveFloat | None = None
    set: dict[str, Any] = {}
    seed: Annotated[int, Field(ge=0)] = 0
    oracle: str = "auto"
    concept: str | None = None  # what the forget set shows, for scoring, relearning and the audit


class ScoreStage(_Stage):
    """Before/after scores on held-out prompts and seeds."""

    seeds: Seeds = "1000-1003"
    steps: PositiveInt = 25
    concepts: list[str] | None = None  # alone (no erase stage): what to score


class RelearnStage(_Stage):
    """The relearning attack under several optimizers (``erase relearn``)."""

    optimizers: dict[Literal["sgd", "sgdm", "adam", "adamw"], list[PositiveFloat]] = {
        "sgd": [0.03],
        "adam": [3e-4],
    }
    steps: PositiveInt = 100
    eval_every: PositiveInt | None = None
    batch_size: PositiveInt = 4
    params: Literal["all", "xattn", "xattn-kv", "non-xattn", "changed"] = "all"
    seeds: Seeds = "0,1,2"
    tau: Annotated[float, Field(gt=0, le=1)] = 0.8
    snr_gamma: PositiveFloat | None = None
    examples: PositiveInt = 16
    data: str | None = None
    eval_seeds: Seeds = "1000-1005"
    other_seeds: Seeds = "1000-1001"
    eval_steps: PositiveInt = 10
    oracle: str | None = None

    @field_validator("optimizers")
    @classmethod
    def _some(cls, v):
        if not v or any(not lrs for lrs in v.values()):
            raise ValueError(
                "name at least one optimizer with at least one learning rate, e.g. {sgd: [0.03]}"
            )
        return v


class AuditStage(_Stage):
    """The audit grid (``erase audit``)."""

    seeds: Seeds = "1000-1001"
    steps: PositiveInt = 25
    guidance: float = 7.5
    erased_prompts: PositiveInt = 4
    neighbours: Annotated[int, Field(ge=0)] = 3
    unrelated: Annotated[int, Field(ge=0)] = 2


class ReportStage(_Stage):
    """``report.html`` and ``report.md`` from everything the run wrote."""

    title: str | None = None


class Seed003Stage(_Stage):
    """Seed 003's descent-ascent case (no diffusion model): one run per forget-set size."""

    forget: list[tuple[Annotated[int, Field(ge=0)], Annotated[int, Field(ge=0)]]] = [(30, 10), (80, 10)]


STAGES: dict[str, type[_Stage]] = {
    "load": LoadStage,
    "erase": EraseStage,
    "untrain": UntrainStage,
    "score": ScoreStage,
    "relearn": RelearnStage,
    "audit": AuditStage,
    "report": ReportStage,
    "seed003": Seed003Stage,
}


class PipelineFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    description: str = ""
    out: str | None = None
    concepts: str = "toy"
    judge: str = "toy"
    stages: list[dict[str, dict[str, Any] | None]] | None = Field(default=None, min_length=1)
    runs: list[str] | None = Field(default=None, min_length=1)  # a study: other pipeline files, in order


class Pipeline:
    """A validated pipeline file: its header and its stages in order."""

    def __init__(
        self, path: Path, head: PipelineFile, stages: list[tuple[str, _Stage]], runs: list[Pipeline] = ()
    ):
        self.path, self.head, self.stages, self.runs = path, head, stages, list(runs)

    @property
    def is_study(self) -> bool:
        return bool(self.runs)

    @property
    def names(self) -> list[str]:
        return [n for n, _ in self.stages]

    def get(self, name: str) -> _Stage | None:
        return next((s for n, s in self.stages if n == name), None)

    @property
    def load(self) -> LoadStage:
        return self.get("load") or LoadStage()

    def default_out(self) -> Path:
        return Path(self.head.out) if self.head.out else Path("runs") / self.head.name


def _where(loc: tuple) -> str:
    out = ""
    for part in loc:
        if part == "[key]":  # pydantic's marker for a bad mapping key; the key itself is already named
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _first_error(path: Path, e: ValidationError, prefix: str = "") -> EraseError:
    err = e.errors()[0]
    where = _where(tuple(err["loc"]))
    where = f"{prefix}.{where}" if prefix and where else (prefix or where)
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "is not a field here"
    elif err["type"] == "missing":
        msg = "is required"
    got = err.get("input")
    tail = f" (got {got!r})" if err["type"] not in ("missing",) and not isinstance(got, dict) else ""
    return EraseError(f"{path}: {where}: {msg}{tail}")


def load_pipeline_file(path: str | Path) -> Pipeline:
    """Read and validate a pipeline file; every mistake is one EraseError naming file and field."""
    path = Path(path)
    if not path.is_file():
        raise EraseError(f"pipeline file {path} does not exist; see pipelines/ for examples")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise EraseError(f"{path} is not valid YAML{at}; check its indentation and quoting") from None
    except UnicodeDecodeError:
        raise EraseError(f"{path} is not a text file; a pipeline is a YAML file") from None
    if not isinstance(raw, dict):
        raise EraseError(f"{path}: a pipeline is a YAML mapping with name and stages; see pipelines/")
    try:
        head = PipelineFile.model_validate(raw)
    except ValidationError as e:
        raise _first_error(path, e) from None
    if (head.stages is None) == (head.runs is None):
        raise EraseError(f"{path}: give either stages (one pipeline) or runs (a study of pipeline files)")
    if head.runs is not None:
        return _load_study(path, head)

    stages: list[tuple[str, _Stage]] = []
    for i, item in enumerate(head.stages):
        if len(item) != 1:
            raise EraseError(
                f"{path}: stages[{i}]: each stage is one mapping like '- relearn: {{steps: 50}}', "
                f"got {len(item)} keys"
            )
        ((name, fields_),) = item.items()
        if name not in STAGES:
            raise EraseError(f"{path}: stages[{i}]: unknown stage {name!r}; allowed: {', '.join(STAGES)}")
        try:
            stages.append((name, STAGES[name].model_validate(fields_ or {})))
        except ValidationError as e:
            raise _first_error(path, e, f"stages[{i}].{name}") from None
    pipe = Pipeline(path, head, stages)
    _check_order(pipe)
    _check_names(pipe)
    return pipe


def _load_study(path: Path, head: PipelineFile) -> Pipeline:
    """A study: each entry of ``runs`` is a pipeline file, relative to the study file."""
    runs, names = [], set()
    for i, entry in enumerate(head.runs):
        sub = (path.parent / entry) if not Path(entry).is_absolute() else Path(entry)
        if not sub.is_file():
            raise EraseError(f"{path}: runs[{i}]: pipeline file {sub} does not exist")
        pipe = load_pipeline_file(sub)
        if pipe.is_study:
            raise EraseError(f"{path}: runs[{i}]: {sub} is itself a study; list its pipelines instead")
        if pipe.head.name in names:
            raise EraseError(f"{path}: runs[{i}]: two runs are named {pipe.head.name!r}; names must differ")
        names.add(pipe.head.name)
        runs.append(pipe)
    return Pipeline(path, head, [], runs)


def _check_order(p: Pipeline) -> None:
    names, path = p.names, p.path
    for name in set(names):
        if names.count(name) > 1:
            raise EraseError(f"{path}: stage {name!r} appears {names.count(name)} times; name it once")
    if "load" in names and names.index("load") != 0:
        raise EraseError(f"{path}: stages[{names.index('load')}].load must be the first stage")
    if "erase" in names and "untrain" in names:
        raise EraseError(f"{path}: a pipeline has an erase or an untrain stage, not both; split it in two")
    edit = next((n for n in names if n in ("erase", "untrain")), None)
    for need in ("relearn", "audit"):
        if need in names and (edit is None or names.index(edit) > names.index(need)):
            raise EraseError(
                f"{path}: stages[{names.index(need)}].{need} needs an erase or untrain stage before it"
            )
    if "report" in names and names.index("report") != len(names) - 1:
        raise EraseError(f"{path}: stages[{names.index('report')}].report must be the last stage")
    untrain = p.get("untrain")
    if untrain is not None and untrain.concept is None and ("relearn" in names or "audit" in names):
        raise EraseError(
            f"{path}: stages[{names.index('untrain')}].untrain.concept is required for relearn and audit "
            "(what the forget set shows, e.g. red)"
        )
    score = p.get("score")
    if score is not None and edit is None and not score.concepts:
        raise EraseError(
            f"{path}: stages[{names.index('score')}].score.concepts is required without an erase stage"
        )


def _check_names(p: Pipeline) -> None:
    """Names the stages refer to exist: the concept file, its concepts, the methods and their settings."""
    from erase.cli import parse_seeds
    from erase.concepts import load_concepts
    from erase.methods import get_method
    from erase.models import check_judge_spec

    path = p.path

    def at(name: str, field: str) -> str:
        return f"{path}: stages[{p.names.index(name)}].{name}.{field}"

    try:
        book = load_concepts(p.head.concepts)
    except EraseError as e:
        raise EraseError(f"{path}: concepts: {e}") from None
    try:
        check_judge_spec(p.head.judge)
    except EraseError as e:
        raise EraseError(f"{path}: judge: {e}") from None

    def concept(name: str, field: str, value: str) -> None:
        if value not in book.concepts:
            raise EraseError(
                f"{at(name, field)}: {value!r} is not in {book.path}; defined: {', '.join(book.concepts)}"
            )

    for name, stage in p.stages:
        for field in ("seeds", "eval_seeds", "other_seeds"):
            value = getattr(stage, field, None)
            if isinstance(value, str):
                try:
                    parse_seeds(value)
                except EraseError as e:
                    raise EraseError(f"{at(name, field)}: {e}") from None
        if name in ("erase", "untrain"):
            try:
                method = get_method(stage.method)
            except EraseError as e:
                raise EraseError(f"{at(name, 'method')}: {e}") from None
            want = "unlearning" if name == "erase" else "untraining"
            if method.kind != want:
                raise EraseError(
                    f"{at(name, 'method')}: {stage.method!r} is a{'n' if method.kind[0] == 'u' else ''} "
                    f"{method.kind} method; the {name} stage takes {want} methods"
                )
            try:
                method.config({"steps": stage.steps, "lr": stage.lr} | dict(stage.set))
            except (EraseError, TypeError) as e:
                raise EraseError(f"{at(name, 'set')}: {e}") from None
        if name == "erase":
            concept(name, "concept", stage.concept)
            for c in stage.preserve or []:
                concept(name, "preserve", c)
            if stage.concept in (stage.preserve or []):
                raise EraseError(f"{at(name, 'preserve')}: {stage.concept!r} is also the erased concept")
        if name == "untrain" and stage.concept is not None:
            concept(name, "concept", stage.concept)
        if name == "score":
            for c in stage.concepts or []:
                concept(name, "concepts", c)
        if name == "relearn" and stage.data is not None and not Path(stage.data).is_dir():
            raise EraseError(f"{at(name, 'data')}: folder {stage.data} does not exist")


def _seeds(value) -> str:
    return value if isinstance(value, str) else ",".join(str(s) for s in value)


def _sets(values: dict) -> list[str]:
    out = []
    for k, v in values.items():
        out += ["--set", f"{k}={v}"]
    return out


def stage_argv(p: Pipeline, name: str, stage: _Stage, out: Path) -> list[str] | None:
    """The CLI command a stage runs, as argv (``None``: the stage has no command of its own)."""
    load, head, score = p.load, p.head, p.get("score")
    model = ["--model", load.model] + (["--device", load.device] if load.device else [])
    model += ["--dtype", load.dtype] if load.dtype else []
    common = ["--concepts", head.concepts, "--judge", head.judge]
    if name == "erase":
        argv = ["concept", stage.concept, "--method", stage.method, "--anchor", stage.anchor]
        argv += ["--seed", str(stage.seed), "--out", str(out / name), *model, *common, *_sets(stage.set)]
        argv += ["--preserve", ",".join(stage.preserve)] if stage.preserve is not None else []
        for flag, v in (("--steps", stage.steps), ("--lr", stage.lr), ("--eta", stage.eta)):
            argv += [flag, str(v)] if v is not None else []
        if score is None:
            argv.append("--no-score")
        else:
            argv += ["--eval-seeds", _seeds(score.seeds), "--eval-steps", str(score.steps)]
        return argv
    if name == "untrain":
        argv = ["data", "--forget", stage.forget, "--method", stage.method, "--seed", str(stage.seed)]
        argv += ["--oracle", stage.oracle, "--out", str(out / name), *model, *common, *_sets(stage.set)]
        argv += ["--retain", stage.retain] if stage.retain else []
        for flag, v in (("--steps", stage.steps), ("--lr", stage.lr)):
            argv += [flag, str(v)] if v is not None else []
        if score is not None and stage.concept:
            argv += ["--score", stage.concept, "--eval-seeds", _seeds(score.seeds)]
        return argv
    if name == "score":
        if "erase" in p.names or "untrain" in p.names:
            return None  # folded into the edit's before/after scores
        first, *rest = score.concepts
        argv = ["score", "--concept", first, "--against", ",".join(rest), "--seeds", _seeds(score.seeds)]
        return [*argv, "--steps", str(score.steps), "--out", str(out / "score"), *model, *common]
    if name not in ("relearn", "audit"):
        return None
    concept, edit = _edited_concept(p), out / ("erase" if "erase" in p.names else "untrain")
    if name == "relearn":
        argv = ["relearn", str(edit), "--concept", concept, "--out", str(out / "relearn"), *common]
        argv += ["--optimizers", ",".join(stage.optimizers)]
        for opt, lrs in stage.optimizers.items():
            argv += ["--lrs", f"{opt}=" + ",".join(f"{lr:g}" for lr in lrs)]
        argv += ["--steps", str(stage.steps), "--batch-size", str(stage.batch_size), "--params", stage.params]
        argv += ["--seeds", _seeds(stage.seeds), "--tau", str(stage.tau), "--examples", str(stage.examples)]
        argv += ["--eval-seeds", _seeds(stage.eval_seeds), "--other-seeds", _seeds(stage.other_seeds)]
        argv += ["--eval-steps", str(stage.eval_steps), "--model", load.model]
        argv += ["--device", load.device] if load.device else []
        for flag, v in (
            ("--eval-every", stage.eval_every),
            ("--snr-gamma", stage.snr_gamma),
            ("--data", stage.data),
            ("--oracle", stage.oracle),
        ):
            argv += [flag, str(v)] if v is not None else []
        if "audit" in p.names:
            argv.append("--save-weights")
        return argv
    if name == "audit":
        argv = ["audit", str(edit), "--concept", concept, "--out", str(out / "audit"), *common]
        argv += ["--relearned", str(out / "relearn")] if "relearn" in p.names else ["--no-relearned"]
        argv += [
            "--seeds",
            _seeds(stage.seeds),
            "--steps",
            str(stage.steps),
            "--guidance",
            str(stage.guidance),
        ]
        argv += ["--erased-prompts", str(stage.erased_prompts), "--neighbours", str(stage.neighbours)]
        argv += ["--unrelated", str(stage.unrelated), "--model", load.model]
        return argv + (["--device", load.device] if load.device else [])
    return None


def _edited_concept(p: Pipeline) -> str:
    erase = p.get("erase")
    return erase.concept if erase is not None else p.get("untrain").concept


def validate_commands(p: Pipeline, out: Path) -> list[tuple[str, list[str] | None]]:
    """Each stage's argv, parsed by the CLI's own parser now, so a bad option fails before any stage runs."""
    import contextlib
    import io

    from erase.cli import build_parser

    parser = build_parser()
    plan = []
    for name, stage in p.stages:
        argv = stage_argv(p, name, stage, out)
        if argv is not None:
            said = io.StringIO()
            try:
                with contextlib.redirect_stderr(said):
                    parser.parse_args(argv)
            except SystemExit:
                why = said.getvalue().strip().splitlines()[-1:] or ["invalid options"]
                raise EraseError(f"{p.path}: stages[{p.names.index(name)}].{name}: {why[0]}") from None
        plan.append((name, argv))
    return plan
