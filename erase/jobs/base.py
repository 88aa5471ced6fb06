"""What every job shares: typed, frozen configs that check themselves, and the options most jobs take.

A job config is a frozen, keyword-only dataclass. Its fields hold the only copy of their defaults,
and their metadata (``option``) says how a person writes them: the help text, and the grammar of
the text form (``seeds``: ``1000-1003``; ``list``: ``red,blue``; ``sets``: ``NAME=VALUE`` items).
The CLI builds its options from that metadata, a pipeline file's stage is read into the same
class, and a notebook constructs it directly; all three get the same checks, because the config
checks itself on construction (``__post_init__``): types first, then the job's own ``check()``.

A mistake in one field raises ``FieldError``, which knows the field, so the CLI can say
``--steps must be positive`` and a pipeline ``stages[1].erase.steps: must be positive``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import math
import time
import types
import typing
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from erase import specs
from erase.errors import EraseError
from erase.judges import SPECS as JUDGE_HELP

DEFAULT_CHECKPOINT_EVERY = 50  # steps between checkpoints of a resumable job


class FieldError(EraseError):
    """A bad value in one field of a job config."""

    def __init__(self, name: str, message: str):
        super().__init__(f"{flag(name)} {message}")
        self.name, self.message = name, message


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def option(
    default: Any = MISSING,
    help: str = "",
    *,
    grammar: str | None = None,
    positional: bool = False,
    metavar: str | None = None,
    cli: bool = True,
) -> Any:
    """A config field with what the CLI and pipeline files need to know about it.

    ``grammar``: how its text form is read (``seeds``, ``ids``, ``list``, ``sets``, ``items``);
    ``positional``: a positional argument on the command line; ``cli``: offered as an option.
    """
    meta = {"help": help, "grammar": grammar, "positional": positional, "metavar": metavar, "cli": cli}
    if isinstance(default, dict | list):
        frozen = dict(default) if isinstance(default, dict) else tuple(default)
        return field(
            default_factory=lambda: dict(frozen) if isinstance(frozen, dict) else frozen, metadata=meta
        )
    return field(default=default, metadata=meta)


@functools.cache
def field_types(cls) -> dict[str, Any]:
    """The config's field annotations, resolved."""
    return typing.get_type_hints(cls)


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


def coerce(name: str, tp, value, grammar: str | None = None):
    """``value`` checked against the annotation ``tp``, reading text forms by ``grammar``."""
    if tp is dict:
        tp = dict[str, Any]
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(name, inner[0], value, grammar)
    if value is None:
        raise FieldError(name, "needs a value")
    if origin is Literal:
        if value not in args:
            raise FieldError(name, f"must be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if origin is tuple:
        return _coerce_tuple(name, args, value, grammar)
    if origin is dict:
        if grammar == "sets" and isinstance(value, list | tuple):
            value = specs.parse_sets(value)
        if not isinstance(value, dict):
            raise FieldError(name, f"must be a mapping, got {value!r}")
        key_t, val_t = args or (str, Any)
        return {coerce(name, key_t, k): coerce(name, val_t, v) for k, v in value.items()}
    return _coerce_scalar(name, tp, value)


def _coerce_tuple(name: str, args, value, grammar):
    if isinstance(value, str | int) and not isinstance(value, bool):
        if grammar == "seeds":
            value = specs.parse_seeds(str(value))
        elif grammar == "ids":
            value = specs.parse_ids(str(value))
        elif grammar == "list":
            value = specs.parse_list(str(value))
        elif isinstance(value, str):
            value = [value]
    if not isinstance(value, list | tuple):
        raise FieldError(name, f"must be a list, got {value!r}")
    if len(args) == 2 and args[1] is Ellipsis:
        out = tuple(coerce(name, args[0], v) for v in value)
    else:
        if len(value) != len(args):
            raise FieldError(name, f"must have {len(args)} items, got {value!r}")
        out = tuple(coerce(name, a, v) for a, v in zip(args, value))
    if grammar in ("seeds", "ids") and any(v < 0 for v in out):
        raise FieldError(name, f"must be non-negative, got {min(out)}")
    return out


def _coerce_scalar(name: str, tp, value):
    if tp is Any:
        return value
    if tp is Path:
        if isinstance(value, str | Path) and str(value):
            return Path(value)
        raise FieldError(name, f"must be a path, got {value!r}")
    if tp is float and isinstance(value, str):
        with contextlib.suppress(ValueError):  # YAML 1.1 reads 1e-4 (no dot) as a string
            value = float(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, float) and not math.isfinite(value):
        # inf or nan would pass "must be positive" checks or run for minutes before a loss says so
        raise FieldError(name, f"must be a finite number, got {value}")
    if isinstance(value, tp) and (tp is bool or not isinstance(value, bool)):
        return value
    raise FieldError(name, f"must be {_type_name(tp)}, got {value!r}")


def positive(cfg, *names: str) -> None:
    """Each named field, where set, must be > 0."""
    for name in names:
        value = getattr(cfg, name)
        if value is not None and not value > 0:
            raise FieldError(name, f"must be positive, got {value}")


def at_least_zero(cfg, *names: str) -> None:
    for name in names:
        if getattr(cfg, name) < 0:
            raise FieldError(name, f"must be 0 or more, got {getattr(cfg, name)}")


@dataclass(frozen=True, kw_only=True)
class JobConfig:
    """Base of every job config: coerces its fields on construction, then runs ``check()``."""

    COMMAND: ClassVar[str] = ""  # the CLI command, e.g. "concept" or "toy train"

    def __post_init__(self):
        hints = field_types(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            object.__setattr__(self, f.name, coerce(f.name, hints[f.name], value, f.metadata.get("grammar")))
        self.check()

    def check(self) -> None:
        """Value checks that need no model: ranges, names. Raise ``FieldError``."""

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


def field_default(f: dataclasses.Field):
    """A field's default value (``MISSING`` for a required field)."""
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else MISSING


def required_fields(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if field_default(f) is MISSING]


def cli_fields(cls) -> list[dataclasses.Field]:
    """The fields offered on the command line, in the order people read them: positional
    arguments, the job's own options, then the options it shares with other jobs."""
    own = set(inspect.get_annotations(cls))
    fields = [f for f in dataclasses.fields(cls) if f.metadata.get("cli", True)]
    return sorted(fields, key=lambda f: (not f.metadata.get("positional"), f.name not in own))


def command_line(cfg: JobConfig) -> list[str]:
    """The ``erase`` arguments that rebuild ``cfg``: the command, then every field that is not
    its default. Records keep it so that one stage of a pipeline can be rerun alone."""
    argv = cfg.COMMAND.split()
    for f in cli_fields(type(cfg)):
        value = getattr(cfg, f.name)
        if value != field_default(f) or f.metadata.get("positional"):
            argv += _as_text(f, value)
    return argv


def _as_text(f, value) -> list[str]:
    grammar, name = f.metadata.get("grammar"), f.name
    if f.metadata.get("positional"):
        return [str(v) for v in value] if isinstance(value, tuple) else [str(value)]
    if value is None:
        return []
    if isinstance(value, bool):
        return [flag(name)] if value else []
    if grammar in ("seeds", "ids"):
        return [flag(name), specs.format_seeds(value)]
    if grammar == "list":
        return [flag(name), ",".join(value)]
    if grammar == "items":
        return [x for v in value for x in (flag(name), str(v))]
    if grammar == "sets":
        return [x for k, v in value.items() for x in ("--set", f"{k}={v}")]
    if isinstance(value, dict):  # the relearning grid: --optimizers and --lrs
        return ["--optimizers", ",".join(value)] + [
            x for k, v in value.items() if v for x in ("--lrs", f"{k}=" + ",".join(f"{lr:g}" for lr in v))
        ]  # no rates (they come from --lrs-from): the optimizer's name alone
    return [flag(name), f"{value:g}" if isinstance(value, float) else str(value)]


# Options most jobs share -----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ModelOptions(JobConfig):
    """The model a job loads."""

    model: str = option(
        "toy", "toy (default), a diffusers folder, or a hub id such as CompVis/stable-diffusion-v1-4"
    )
    device: str | None = option(None, "cpu, cuda, cuda:N (default: cuda when present)")
    dtype: Literal["fp32", "fp16", "bf16"] | None = option(None, "default: bf16/fp16 on CUDA, fp32 on CPU")
    allow_pickle: bool = option(
        False,
        "load .bin/.ckpt/.pt model weights by unpickling them (only for files you trust: a pickle "
        "can run code); without it erase reads safetensors only",
    )

    def load(self, spec: str | None = None):
        """The pipeline this job works on (``spec`` overrides ``model``: an oracle, a base)."""
        from erase.models import load_pipeline

        return load_pipeline(
            spec or self.model, device=self.device, dtype=self.dtype, allow_pickle=self.allow_pickle
        )

    def load_judge(self, spec: str):
        from erase.judges import load_judge

        return load_judge(spec, device=self.device, neutral=getattr(self, "neutral", None))


@dataclass(frozen=True, kw_only=True)
class OutOptions(JobConfig):
    out: Path | None = option(None, "output folder (default under runs/)")
    overwrite: bool = option(False, "replace a non-empty output folder")

    def out_dir(self, kind: str, tag: str, fallback: Path | None = None) -> Path:
        """``out``, else ``fallback``, else ``runs/KIND-TAG-TIME``; checked to be writable."""
        from erase.io import check_writable

        out = self.out or fallback or Path("runs") / f"{kind}-{tag}-{time.strftime('%Y%m%d-%H%M%S')}"
        check_writable(out, self.overwrite)
        return out


@dataclass(frozen=True, kw_only=True)
class ResumeOptions(JobConfig):
    resume: bool = option(
        False,
        "continue an interrupted run from its last checkpoint (kept in OUT.partial/); give the same "
        "--out and settings",
    )
    checkpoint_every: int = option(
        DEFAULT_CHECKPOINT_EVERY, "steps between checkpoints; SIGTERM also writes one", metavar="N"
    )

    def check(self) -> None:
        super().check()
        positive(self, "checkpoint_every")


@dataclass(frozen=True, kw_only=True)
class JudgeOptions(JobConfig):
    concepts: str = option("toy", "concept file: a name under prompts/ or a YAML path")
    judge: str = option("toy", JUDGE_HELP)
    neutral: str | None = option(
        None,
        "a 'none of these' label for a CLIP judge's zero-shot classifier (e.g. 'nothing' or 'an image'): "
        "an image that shows no concept of the group is counted as neutral, not forced into one",
    )

    def book(self):
        from erase.concepts import load_concepts

        return load_concepts(self.concepts)

    def erased_concept(self, meta: dict, where) -> tuple:
        """The judge checked, the concept book, and the concept to attack or audit: ``concept`` when
        set (a field of the job), else the one the edit at ``where`` (its ``meta``) erased."""
        from erase.delta import concept_of

        book = self.book()
        name = getattr(self, "concept", None) or concept_of(meta)
        if not name:
            raise EraseError(f"{where} names no erased concept (a data-level run?); pass --concept NAME")
        target = book.get(name)
        self.check_judge([target])
        return book, target

    def check_judge(self, concepts=()) -> None:
        """The judge spec, and that the judge can read every concept in ``concepts`` (those it will
        be asked about), before anything is loaded."""
        from erase.judges import check_judge

        if self.neutral is not None and not self.neutral.strip():
            raise FieldError("neutral", "is empty; pass a label such as 'nothing', or leave it out")
        check_judge(self.judge, groups=[c.group for c in concepts], neutral=self.neutral)


@dataclass(frozen=True, kw_only=True)
class RunOptions(ModelOptions, JudgeOptions, OutOptions, ResumeOptions):
    """The options of a job that loads a model and a judge and writes a resumable run folder."""


@dataclass(frozen=True, kw_only=True)
class EditOptions(RunOptions):
    """A job that edits the model with a registered method (``method``, set by each job)."""

    method: str
    steps: int | None = option(None, "gradient steps (method default if omitted)")
    lr: float | None = option(None, "learning rate (method default if omitted)")
    set: dict = option(
        {}, "any other method setting, e.g. --set lr=1e-4 (repeatable)", grammar="sets", metavar="NAME=VALUE"
    )
    seed: int = option(0, "seed of the edit: what it draws (trajectories, subsets, batches, noise)")

    def check(self) -> None:
        super().check()
        from erase.methods import REGISTRY

        if self.method not in REGISTRY:
            raise FieldError(
                "method", f"names an unknown method {self.method!r}; choose one of {', '.join(REGISTRY)}"
            )
        positive(self, "steps", "lr")
        if self.seed < 0:
            raise FieldError("seed", f"must be non-negative, got {self.seed}")
        for name, value in self.named_settings().items():
            if value is not None and name in self.set and self.set[name] != value:
                raise FieldError("set", f"gives {name} again (--{name} {value}); give it once")

    def named_settings(self) -> dict:
        """The method settings that have an option of their own (None: not given)."""
        return {"steps": self.steps, "lr": self.lr}

    @property
    def overrides(self) -> dict:
        """The method settings the user chose; the method's own defaults fill in the rest. An
        option left out (None) does not hide the same setting given with --set."""
        return self.named_settings() | dict(self.set)


def open_run(cfg, command: str, out: Path, rec, *, stable_out: bool = False):
    """The run folder of a resumable job: its status, checkpoints and commit (``erase.checkpoint``)."""
    from erase import distributed
    from erase.checkpoint import Run

    if cfg.resume and cfg.out is None and not stable_out:
        raise EraseError("--resume needs --out: the folder of the run to continue")
    if not distributed.is_main():
        # The main process owns the run folder (status, its checkpoints, the commit); the
        # others only compute their share and return before writing anything.
        return distributed.Bystander()
    return Run(
        out,
        command,
        rec.data["config"],
        resume=cfg.resume,
        overwrite=cfg.overwrite,
        every=cfg.checkpoint_every,
    )


@dataclass
class JobResult:
    """What a job hands back: where it wrote, the record it wrote, and its own results."""

    out: Path | None
    record: dict = field(default_factory=dict)

    @property
    def results(self) -> dict:
        return self.record.get("results", self.record)


OPERATIONAL = ("out", "overwrite", "resume", "checkpoint_every")  # how a job runs, not what it computes


def record_config(cfg: JobConfig) -> dict:
    """The config as the run record keeps it (and a resumed run must match): every field that
    changes the result, JSON-ready."""
    import json

    values = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name not in OPERATIONAL}
    return json.loads(json.dumps(values, default=str))


def start_record(cfg: JobConfig, seeds=(), **extra):
    """The job's ``RunRecord``: its config (plus what the job derived from it) and its command line."""
    from erase.record import RunRecord

    return RunRecord(cfg.COMMAND, record_config(cfg) | extra, seeds, argv=command_line(cfg))
