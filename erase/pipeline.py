"""Pipeline files: one YAML names the stages of a study, ``erase run FILE`` runs them into one folder.

A file is read whole into job configs (``erase.jobs``) before anything runs: its YAML, every
stage's fields and types (a stage's fields are its job's), the names it refers to (methods,
concepts, the concept file) and the order of the stages (relearning needs an edit before it). An
error names the file, the stage and the field. Then each stage's job runs in-process, so a
pipeline and the commands a user types go through the same code and write the same files:

- ``load``: the model every later stage uses;
- ``erase``: ``erase concept`` into RUN/erase/ (delta.safetensors, record.json);
- ``untrain``: ``erase untrain`` into RUN/untrain/;
- ``use``: an edit made before (a run folder or delta, e.g. the toy world's oracle
  ``erase/toy/oracles/color=red``), for the stages below to attack or audit;
- ``score``: the before/after scores of the edit (its record.json); without an edit, RUN/score/;
- ``relearn``: ``erase relearn`` into RUN/relearn/, saving the relearned weights when audited;
- ``attack``: ``erase attack`` into RUN/attack/ (concept inversion, ...; calibrated on the base
  model and the oracle);
- ``audit``: ``erase audit`` into RUN/audit/;
- ``report``: ``erase report``: RUN/report.html and RUN/report.md from everything the run wrote;
- ``seed003``: seed 003's descent-ascent case into RUN/seed003/.

The fields a stage may set are its job's, less those the pipeline fills in (the model from
``load``, the concept file and judge from the header, the folders, the erased concept).
Stages write their outputs whole, and ``RUN/pipeline.json`` records which stages are done;
``erase run FILE --resume`` skips those after a crash.

In a study, a relearn stage may point at an earlier run of the same study: ``lrs_from: run:NAME``
(the learning rates that run's sweep chose) and ``oracle: run:NAME`` (its relearning, as the
calibration), read from STUDY/NAME/relearn/ when the stage runs; an attack stage ``calibration:
run:NAME`` (that run's base-model and oracle results of the same attacks), from STUDY/NAME/attack/.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shlex
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from erase import jobs
from erase.errors import EraseError
from erase.jobs.base import FieldError, JobConfig, ModelOptions, option, positive, required_fields
from erase.seeds import eval_image_seeds

MODEL = ("model", "device", "dtype", "allow_pickle")
EDITS = ("erase", "untrain", "use")  # the stages that give the later ones an edit
RUN_REFS = {"relearn": ("lrs_from", "oracle"), "attack": ("calibration",)}  # fields that take run:NAME
RUNNING = ("out", "overwrite", "resume", "checkpoint_every")  # the pipeline runs the stages
ABOUT = {
    "load": "the model the stages below load",
    "score": "the edit's before/after scores (in its record)",
    "seed003": "seed 003's logistic-regression case",
    "use": "an edit made before",
}


@dataclass(frozen=True, kw_only=True)
class PipelineJob(JobConfig):
    """Run the stages a pipeline file names, into one run folder with a report."""

    COMMAND = "run"

    file: Path = option(help="a pipeline YAML file, e.g. pipelines/toy-demo.yaml", positional=True)
    out: Path | None = option(None, "run folder (default: the file's out, or runs/<name>)")
    validate: bool = option(False, "only check the file; run nothing")
    resume: bool = option(False, "skip the stages a failed run finished")
    overwrite: bool = option(False, "replace a previous run in the folder")
    set: dict = option(
        {},
        "a stage's field for this run only, in every pipeline of a study that has the stage (--set "
        "attack.seed=1 --out runs/NAME-seed1); repeatable, recorded in the run's pipeline.json",
        grammar="sets",
        metavar="STAGE.FIELD=VALUE",
    )

    def check(self) -> None:
        for key in self.set:
            stage, _, field = key.partition(".")
            if stage not in STAGES or not field:
                raise FieldError(
                    "set",
                    f"{key}: name a stage and one of its fields, e.g. attack.seed=1 (stages: {', '.join(STAGES)})",
                )


@dataclass(frozen=True, kw_only=True)
class Head(JobConfig):
    """A pipeline file's header."""

    name: str = option(help="the run's name (and default folder runs/NAME)")
    description: str = option("", "what the run shows")
    out: str | None = option(None, "run folder")
    concepts: str = option("toy", "concept file")
    judge: str = option("toy", "judge")
    stages: tuple[dict, ...] | None = option(None, "the stages, in order")
    runs: tuple[str, ...] | None = option(None, "a study: other pipeline files, in order")

    def check(self) -> None:
        if not self.name.strip():
            raise FieldError("name", "is empty; give the run a name")
        for name in ("stages", "runs"):
            if getattr(self, name) == ():
                raise FieldError(name, "is empty; list at least one")


@dataclass(frozen=True, kw_only=True)
class UseStage(JobConfig):
    """An edit made before: the stages below attack or audit it."""

    run: str = option(help="a run folder or delta file, e.g. erase/toy/oracles/color=red")

    def check(self) -> None:
        self.meta()  # a missing or foreign file fails here, naming the stage

    def meta(self) -> dict:
        from erase.delta import delta_path, read_meta

        try:
            return read_meta(delta_path(self.run))
        except EraseError as e:
            raise FieldError("run", str(e)) from None

    @property
    def concept(self) -> str | None:
        from erase.delta import concept_of

        return concept_of(self.meta())


@dataclass(frozen=True, kw_only=True)
class ScoreStage(JobConfig):
    """Held-out scores: of the edit, before and after; alone, of the named concepts."""

    seeds: tuple[int, ...] = option(eval_image_seeds(4), "held-out seeds", grammar="seeds")
    steps: int = option(25, "sampling steps")
    concepts: tuple[str, ...] | None = option(None, "alone (no edit stage): what to score", grammar="list")

    def check(self) -> None:
        positive(self, "steps")


# Stage name -> (its config class, the fields the pipeline fills in and the file may not set).
STAGES: dict[str, tuple[type[JobConfig], tuple[str, ...]]] = {
    "load": (ModelOptions, ()),
    "erase": (
        jobs.ConceptJob,
        (*MODEL, *RUNNING, "concepts", "judge", "eval_seeds", "eval_steps", "no_score"),
    ),
    "untrain": (jobs.UntrainJob, (*MODEL, *RUNNING, "concepts", "judge", "eval_seeds", "score")),
    "use": (UseStage, ()),
    "score": (ScoreStage, ()),
    "relearn": (jobs.RelearnJob, (*MODEL, *RUNNING, "concepts", "judge", "run", "concept", "save_weights")),
    "attack": (jobs.AttackJob, (*MODEL, "out", "overwrite", "concepts", "judge", "run", "concept")),
    "audit": (
        jobs.AuditJob,
        (*MODEL, *RUNNING, "concepts", "judge", "run", "concept", "relearned", "no_relearned"),
    ),
    "report": (jobs.ReportJob, ("run",)),
    "seed003": (jobs.Seed003Job, ("out",)),
}


class Pipeline:
    """A validated pipeline file: its header, its stages' raw fields, and (a study) its runs."""

    def __init__(self, path: Path, head: Head, stages: list[tuple[str, dict]], runs=()):
        self.path, self.head, self.stages, self.runs = path, head, stages, list(runs)
        self.overrides: dict = {}  # erase run --set: STAGE.FIELD -> value, already in the stages

    def override(self, sets: dict) -> None:
        """``erase run --set``: each STAGE.FIELD replaces the file's value in every stage of that
        kind (of every pipeline of a study); one that no stage takes is refused."""
        self.overrides = dict(sets)
        for key, value in sets.items():
            name, _, field = key.partition(".")
            cls, forbidden = STAGES[name]
            if field not in {f.name for f in dataclasses.fields(cls)} - set(forbidden):
                raise EraseError(
                    f"--set {key}: the {name} stage has no field {field!r} that a pipeline file sets"
                )
            hit = False
            for pipe in self.runs or [self]:
                pipe.overrides = self.overrides
                for i, (stage, fields_) in enumerate(pipe.stages):
                    if stage == name and isinstance(fields_, dict):
                        pipe.stages[i] = (stage, fields_ | {field: value})
                        hit = True
            if not hit:
                raise EraseError(
                    f"--set {key}: {self.path} has no {name} stage; drop it or name another stage"
                )

    @property
    def is_study(self) -> bool:
        return bool(self.runs)

    @property
    def names(self) -> list[str]:
        return [n for n, _ in self.stages]

    def get(self, name: str) -> dict | None:
        return next((s for n, s in self.stages if n == name), None)

    def default_out(self) -> Path:
        return Path(self.head.out) if self.head.out else Path("runs") / self.head.name


def build(cls, data: dict, where: str, *, forbidden=(), given: dict | None = None):
    """``cls`` from a YAML mapping; every mistake is one ``EraseError`` naming ``where`` and the field."""
    if not isinstance(data, dict):
        raise EraseError(f"{where}: must be a mapping of fields, got {data!r}")
    at = f"{where}." if where else ""
    known = {f.name for f in dataclasses.fields(cls)} - set(forbidden)
    for key in data:
        if key not in known:
            raise EraseError(f"{at}{key}: is not a field here (got {data[key]!r})")
    values = (given or {}) | data
    for name in required_fields(cls):
        if name not in values:
            raise EraseError(f"{at}{name}: is required")
    try:
        return cls(**values)
    except FieldError as e:
        raise EraseError(f"{at}{e.name}: {e.message}") from None
    except EraseError as e:
        raise EraseError(f"{where}: {e}") from None


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
        head = build(Head, raw, "")
    except EraseError as e:
        raise EraseError(f"{path}: {e}") from None
    if (head.stages is None) == (head.runs is None):
        raise EraseError(f"{path}: give either stages (one pipeline) or runs (a study of pipeline files)")
    if head.runs is not None:
        return _load_study(path, head)
    stages = []
    for i, item in enumerate(head.stages):
        if not isinstance(item, dict) or len(item) != 1:
            raise EraseError(
                f"{path}: stages[{i}]: each stage is one mapping like '- relearn: {{steps: 50}}'"
            )
        ((name, fields_),) = item.items()
        if name not in STAGES:
            raise EraseError(f"{path}: stages[{i}]: unknown stage {name!r}; allowed: {', '.join(STAGES)}")
        stages.append((name, fields_ or {}))
    pipe = Pipeline(path, head, stages)
    _check_order(pipe)
    return pipe


def _load_study(path: Path, head: Head) -> Pipeline:
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
    if sum(n in names for n in EDITS) > 1:
        raise EraseError(f"{path}: a pipeline has one erase, untrain or use stage; split it in two")
    edit = next((n for n in names if n in EDITS), None)
    for need in ("relearn", "attack", "audit"):
        if need in names and (edit is None or names.index(edit) > names.index(need)):
            raise EraseError(
                f"{path}: stages[{names.index(need)}].{need} needs an erase, untrain or use stage before it"
            )
    if edit == "use" and "score" in names:
        raise EraseError(
            f"{path}: stages[{names.index('score')}].score: a used edit was scored when it was made"
        )
    if "report" in names and names.index("report") != len(names) - 1:
        raise EraseError(f"{path}: stages[{names.index('report')}].report must be the last stage")
    untrain = p.get("untrain")
    if (
        untrain is not None
        and not untrain.get("concept")
        and any(n in names for n in ("relearn", "attack", "audit"))
    ):
        raise EraseError(
            f"{path}: stages[{names.index('untrain')}].untrain.concept is required for relearn, attack and audit "
            "(what the forget set shows, e.g. red)"
        )
    score = p.get("score")
    if score is not None and edit is None and not score.get("concepts"):
        raise EraseError(
            f"{path}: stages[{names.index('score')}].score.concepts is required without an erase stage"
        )


def plan(p: Pipeline, out: Path) -> list[tuple[str, JobConfig | None]]:
    """Each stage's job config (None: nothing of its own to run), built and checked now, so a bad
    field fails before any stage runs."""

    def where(name: str) -> str:
        return f"{p.path}: stages[{p.names.index(name)}].{name}"

    def stage(name: str, given: dict | None = None, resolved: dict | None = None) -> JobConfig:
        cls, forbidden = STAGES[name]
        data = p.get(name)
        if resolved and isinstance(data, dict):
            data = data | resolved
        return build(cls, data, where(name), forbidden=forbidden, given=given)

    load = stage("load") if "load" in p.names else ModelOptions()
    score = stage("score") if "score" in p.names else None
    common = {k: getattr(load, k) for k in MODEL} | {"concepts": p.head.concepts, "judge": p.head.judge}
    edit_name = next((n for n in p.names if n in EDITS), None)
    steps: list[tuple[str, JobConfig | None]] = []
    for name in p.names:
        given = common | {"out": out / name}
        if name == "erase":
            seen = (
                {"no_score": True}
                if score is None
                else {"eval_seeds": score.seeds, "eval_steps": score.steps}
            )
            steps.append((name, stage(name, given | seen)))
        elif name == "untrain":
            concept = p.get(name).get("concept")
            seen = {"score": (concept,), "eval_seeds": score.seeds} if score is not None and concept else {}
            steps.append((name, stage(name, given | seen)))
        elif name == "use":
            steps.append((name, stage(name)))
        elif name in ("relearn", "attack", "audit"):
            edit = steps[[n for n, _ in steps].index(edit_name)][1]
            made = edit.run if edit_name == "use" else str(out / edit_name)
            given |= {"run": made, "concept": edit.concept}
            resolved = {}
            fields_ = p.get(name) if isinstance(p.get(name), dict) else {}
            for key in RUN_REFS.get(name, ()):  # run:NAME, the same stage of an earlier run of this study
                value = fields_.get(key)
                if isinstance(value, str) and value.startswith("run:"):
                    resolved[key] = str((out.parent / value[4:] / name).absolute())
            if name == "relearn":
                given["save_weights"] = "audit" in p.names
            elif name == "audit":
                given |= {"relearned": out / "relearn"} if "relearn" in p.names else {"no_relearned": True}
            steps.append((name, stage(name, given, resolved)))
        elif name == "score" and edit_name is None:
            first, *rest = score.concepts
            cfg = jobs.ScoreJob(
                **common, concept=first, against=rest, seeds=score.seeds, steps=score.steps, out=out / name
            )
            steps.append((name, cfg))
        elif name == "report":
            steps.append((name, stage(name, {"run": out})))
        elif name == "seed003":
            steps.append((name, stage(name, {"out": out / name})))
        else:
            steps.append((name, None))  # load, and a score folded into the edit
    _check_names(p, steps)
    return steps


def _check_names(p: Pipeline, steps) -> None:
    """Names the stages refer to exist: the concept file, its concepts, the methods and their settings."""
    from erase.concepts import load_concepts
    from erase.judges import check_judge
    from erase.methods import get_method

    path = p.path
    try:
        book = load_concepts(p.head.concepts)
    except EraseError as e:
        raise EraseError(f"{path}: concepts: {e}") from None
    try:
        check_judge(p.head.judge)
    except EraseError as e:
        raise EraseError(f"{path}: judge: {e}") from None

    named = []  # every concept a stage names: the judge must read their groups

    def concept(name: str, field: str, value: str) -> None:
        named.append(value)
        if value not in book.concepts:
            raise EraseError(
                f"{path}: stages[{p.names.index(name)}].{name}.{field}: {value!r} is not in {book.path}; "
                f"defined: {', '.join(book.concepts)}"
            )

    for name, cfg in steps:
        at = f"{path}: stages[{p.names.index(name)}].{name}"
        if name in ("erase", "untrain"):
            try:
                method = get_method(cfg.method, "unlearning" if name == "erase" else "untraining")
            except EraseError as e:
                raise EraseError(f"{at}.method: {e}") from None
            try:
                method.config(cfg.overrides)
            except (EraseError, TypeError) as e:
                raise EraseError(f"{at}.set: {e}") from None
            for c in ([cfg.concept] if cfg.concept else []) + list(getattr(cfg, "preserve", None) or []):
                concept(name, "concept" if c == cfg.concept else "preserve", c)
            if name == "erase" and cfg.concept in (cfg.preserve or []):
                raise EraseError(f"{at}.preserve: {cfg.concept!r} is also the erased concept")
        if name == "score" and cfg is not None:
            for c in [cfg.concept, *cfg.against]:
                concept(name, "concepts", c)
        if name == "relearn" and cfg.data is not None and not cfg.data.is_dir():
            raise EraseError(f"{at}.data: folder {cfg.data} does not exist")
    try:
        check_judge(p.head.judge, groups=[book.get(c).group for c in dict.fromkeys(named)])
    except EraseError as e:
        raise EraseError(f"{path}: judge: {e}") from None


# Running ---------------------------------------------------------------------------------------------


def run_pipeline(cfg: PipelineJob) -> dict:
    """``erase run FILE``: validate the whole file (every pipeline of a study), then run it."""
    pipeline = load_pipeline_file(cfg.file)
    pipeline.override(cfg.set)
    out = cfg.out or pipeline.default_out()
    parts = [(sub, out / sub.head.name) for sub in pipeline.runs] if pipeline.is_study else [(pipeline, out)]
    plans = [plan(sub, sub_out) for sub, sub_out in parts]
    if cfg.validate:
        what = (
            f"runs: {', '.join(s.head.name for s, _ in parts)}"
            if pipeline.is_study
            else f"stages: {', '.join(pipeline.names)}"
        )
        print(f"{cfg.file}: valid; {what}; run folder {out}")
        return {"valid": True}
    _claim(out, cfg)
    if cfg.resume:  # a stage cut off mid-way goes on from its checkpoints
        plans = [[(name, _resumed(job)) for name, job in steps] for steps in plans]
    if not pipeline.is_study:
        return _run_stages(pipeline, out, plans[0])
    return _run_study(pipeline, out, parts, plans)


def _resumed(job: JobConfig | None) -> JobConfig | None:
    if job is None or "resume" not in {f.name for f in dataclasses.fields(job)}:
        return job
    return dataclasses.replace(job, resume=True)


def _claim(out: Path, cfg: PipelineJob) -> None:
    """Make sure ``out`` is free, or a run of ours that --resume or --overwrite may take over."""
    status_path = out / "pipeline.json"
    previous = json.loads(status_path.read_text()) if status_path.is_file() else None
    if out.exists() and not out.is_dir():
        raise EraseError(f"run folder {out} exists and is not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()):
        if cfg.overwrite:
            if previous is None:
                raise EraseError(f"{out} is not an erase run folder (no pipeline.json); choose another --out")
            shutil.rmtree(out)
        elif not (cfg.resume and previous is not None):
            done = previous is not None and previous.get("status") == "done"
            hint = "pass --overwrite to run it again" if done else "pass --resume to go on, or --overwrite"
            raise EraseError(f"run folder {out} already holds a {'finished ' if done else ''}run; {hint}")


def _run_study(pipeline: Pipeline, out: Path, parts, plans) -> dict:
    """A study runs its pipelines one after the other, then sums up what they show."""
    from erase.io import write_json
    from erase.report.html import write_study

    t0 = time.time()
    status_path = out / "pipeline.json"
    state = _status(pipeline, out, [s.head.name for s, _ in parts])
    for entry, (sub, sub_out), steps in zip(state["stages"], parts, plans):
        sub_state = out / sub.head.name / "pipeline.json"
        if sub_state.is_file() and json.loads(sub_state.read_text()).get("status") == "done":
            print(f"=== {sub.head.name}: done in an earlier run, skipped")
            entry["status"] = "done"
            continue
        print(f"=== {sub.head.name} ({sub.path})")
        try:
            _run_stages(sub, sub_out, steps)
        except (EraseError, KeyboardInterrupt) as e:
            state |= {"status": "failed", "reason": f"run {sub.head.name}: {e or 'interrupted'}"}
            entry["status"] = "failed"
            write_json(status_path, state)
            raise
        entry["status"] = "done"
        write_json(status_path, state)
    md = write_study(out, pipeline.head.name, [(s.head.name, o) for s, o in parts])
    state |= {"status": "done", "wall_seconds": round(time.time() - t0, 1)}
    write_json(status_path, state)
    print(md.read_text())
    print(f"study folder: {out} ({state['wall_seconds']} s)")
    return state


def _status(pipeline: Pipeline, out: Path, names: list[str]) -> dict:
    """The run's pipeline.json, created or taken up again: which stages (or runs) are done."""
    from erase.io import write_json

    path = out / "pipeline.json"
    previous = json.loads(path.read_text()) if path.is_file() else {}
    finished = {s["name"] for s in previous.get("stages", []) if s.get("status") == "done"}
    text = Path(pipeline.path).read_text()
    state = {
        "name": pipeline.head.name,
        "description": pipeline.head.description,
        "file": str(pipeline.path),
        "sha256": hashlib.sha256(text.encode()).hexdigest(),
        "text": text,
        **({"set": pipeline.overrides} if pipeline.overrides else {}),
        "status": "running",
        "stages": [{"name": n, "status": "done" if n in finished else "pending"} for n in names],
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(path, state)
    return state


def _run_stages(pipeline: Pipeline, out: Path, steps: list[tuple[str, JobConfig | None]]) -> dict:
    """Run one pipeline's stages in order; outputs appear whole, pipeline.json says how far it got."""
    from erase.io import write_json

    state = _status(pipeline, out, [n for n, _ in steps])
    status_path = out / "pipeline.json"
    t_all = time.time()
    for entry, (name, cfg) in zip(state["stages"], steps):
        if entry["status"] == "done":
            print(f"== {name}: done in an earlier run, skipped")
            continue
        if isinstance(cfg, UseStage):
            cfg = None  # an edit made before: nothing to run
        shown = (
            "erase " + shlex.join(jobs.command_line(cfg))
            if cfg is not None and cfg.COMMAND != "seed003"
            else ABOUT.get(name, "")
        )
        print(f"== {name}: {shown}")
        t0 = time.time()
        try:
            if cfg is not None:
                jobs.run(cfg)
        except (EraseError, KeyboardInterrupt) as e:
            entry["status"] = "failed"
            state |= {"status": "failed", "reason": f"stage {name}: {e or 'interrupted'}"}
            write_json(status_path, state)
            raise
        entry |= {"status": "done", "seconds": round(time.time() - t0, 1)}
        write_json(status_path, state)
    state |= {"status": "done", "wall_seconds": round(time.time() - t_all, 1)}
    write_json(status_path, state)
    print(f"run folder: {out} ({state['wall_seconds']} s)")
    return state
