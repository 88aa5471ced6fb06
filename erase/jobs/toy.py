"""``erase toy train | oracle | eval``: the bundled toy world, rebuilt, retrained without a concept
or some samples (its oracles), or measured."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from erase.errors import EraseError
from erase.jobs.base import (
    JUDGE_HELP,
    JobConfig,
    JobResult,
    ModelOptions,
    OutOptions,
    option,
    positive,
    start_record,
)
from erase.jobs.score import EVAL_SEEDS

_EXCLUDE_HELP = "leave a concept out of the UNet's data, e.g. color=red (repeatable)"
_IDS_HELP = "sample ids to leave out of the UNet's data: 1,2,3, 10-20, or @FILE (one per line)"


@dataclass(frozen=True, kw_only=True)
class ToyTrainJob(JobConfig):
    """Rebuild the toy world from nothing (about 15 minutes on 2 cores)."""

    COMMAND = "toy train"

    out: Path = option(help="folder to write (pipeline/, clip/, manifest.json)")
    seed: int = option(0, "the recipe's seed")
    exclude: tuple[str, ...] = option((), _EXCLUDE_HELP, grammar="items")
    exclude_ids: tuple[int, ...] = option((), _IDS_HELP, grammar="ids")
    stages: tuple[str, ...] = option(
        ("vae", "clip", "unet"), "stages to train; the others are copied from --base", grammar="list"
    )
    base: Path | None = option(None, "toy world to take untrained stages from (default: bundled)")
    unet_steps: int | None = option(None, "override the UNet's step count")
    threads: int = option(2, "torch threads")
    no_eval: bool = option(False, "skip the quality evaluation at the end")
    overwrite: bool = option(False, "replace a non-empty output folder")

    def check(self) -> None:
        positive(self, "unet_steps", "threads")


def train(cfg: ToyTrainJob) -> JobResult:
    from dataclasses import replace

    from erase.io import check_writable, write_json
    from erase.recipes.train import ToyTrainConfig, train_toy
    from erase.toy.world import World, select

    recipe = ToyTrainConfig(
        seed=cfg.seed,
        stages=cfg.stages,
        exclude=cfg.exclude,
        exclude_ids=cfg.exclude_ids,
        threads=cfg.threads,
    )
    if cfg.unet_steps is not None:
        recipe = replace(recipe, unet_steps=cfg.unet_steps)
    select(
        World(recipe.seed, recipe.world_size), recipe.exclude, recipe.exclude_ids
    )  # validate before training
    check_writable(cfg.out, cfg.overwrite)
    manifest = train_toy(recipe, cfg.out, cfg.base)
    if not cfg.no_eval:
        from erase.judges import load_judge
        from erase.models import load_pipeline
        from erase.recipes.quality import markdown, toy_quality

        pipe = load_pipeline(str(cfg.out / "pipeline"), device="cpu")
        judge = load_judge(str(cfg.out / "clip"), device="cpu")
        q = toy_quality(pipe, judge, list(EVAL_SEEDS))
        del q["images"], q["prompts"]
        manifest["metrics"]["quality"] = q
        write_json(cfg.out / "manifest.json", manifest)
        print(markdown(q))
    print(f"toy world written to {cfg.out} in {manifest['train_seconds']:.0f} s")
    return JobResult(cfg.out, manifest)


@dataclass(frozen=True, kw_only=True)
class ToyOracleJob(JobConfig):
    """Retrain the toy UNet without a concept or some samples: the ideal reference."""

    COMMAND = "toy oracle"

    exclude: tuple[str, ...] = option(
        (), "a concept to leave out, e.g. color=red (repeatable)", grammar="items"
    )
    exclude_ids: tuple[int, ...] = option(
        (), "sample ids to leave out: 1,2,3, 10-20, or @FILE", grammar="ids"
    )
    forget: str | None = option(
        None, "leave out a forget set given as for `erase untrain`: toy:color=red:n=32"
    )
    seed: int = option(0, "the seed `erase untrain` drew the forget set with")
    out: Path | None = option(None, "folder to write (default: the oracle cache, by exclusion)")
    unet_steps: int | None = option(None, "override the UNet's step count (tests)")
    threads: int = option(2, "torch threads")
    rebuild: bool = option(False, "train even if a cached oracle exists")

    def check(self) -> None:
        positive(self, "unet_steps", "threads")


def oracle(cfg: ToyOracleJob) -> JobResult:
    from erase.recipes.oracle import build_oracle, find_oracle, forget_oracle, oracle_key

    ids, exclude = list(cfg.exclude_ids), list(cfg.exclude)
    if cfg.forget:
        from erase.data import toy_ids

        if not cfg.forget.startswith("toy:"):
            raise EraseError("--forget for an oracle must be a toy spec such as toy:color=red:n=32")
        forget_ids = toy_ids(cfg.forget, seed=cfg.seed)
        _, key = forget_oracle(cfg.forget, forget_ids)
        if key.startswith("ids"):
            ids += forget_ids
        else:
            exclude.append(key)
    key = oracle_key(exclude, ids)
    found = None if cfg.rebuild or cfg.out else find_oracle(exclude, ids)
    if found:
        print(f"oracle {key} is already built: {found} (pass --rebuild to train it again)")
        return JobResult(found)
    out = build_oracle(exclude, ids, out=cfg.out, unet_steps=cfg.unet_steps, threads=cfg.threads)
    print(f"oracle {key} written to {out}; use it as the model toy+{out}")
    return JobResult(out)


@dataclass(frozen=True, kw_only=True)
class ToyEvalJob(ModelOptions, OutOptions):
    """The toy model's colour and shape accuracy per prompt."""

    COMMAND = "toy eval"

    judge: str = option("toy", JUDGE_HELP + " (reading colours and shapes)")
    seeds: tuple[int, ...] = option(EVAL_SEEDS, "held-out seeds", grammar="seeds")
    steps: int = option(25, "sampling steps")
    guidance: float = option(7.5, "classifier-free guidance scale")

    def check(self) -> None:
        super().check()
        positive(self, "steps")


def evaluate(cfg: ToyEvalJob) -> JobResult:
    from erase.concepts import load_concepts
    from erase.generate import grid
    from erase.io import atomic_dir, write_json
    from erase.judges import check_judge
    from erase.recipes.quality import markdown, toy_quality

    book = load_concepts("toy")
    check_judge(cfg.judge, groups=[book.groups["color"], book.groups["shape"]])
    out = cfg.out_dir("toy-eval", "quality")
    rec = start_record(cfg, cfg.seeds)
    pipe = cfg.load()
    judge = cfg.load_judge(cfg.judge)
    q = toy_quality(pipe, judge, list(cfg.seeds), steps=cfg.steps, guidance=cfg.guidance)
    images = q.pop("images")
    rec.prompts("heldout", texts=q.pop("prompts"))
    print(markdown(q))
    with atomic_dir(out) as tmp:
        # One row per prompt (phrasings x seeds across), for a person to check the numbers.
        grid(images, cols=len(images) // len(q["per_prompt"])).save(tmp / "grid.png")
        record = rec.finish(q, device=str(pipe.device))
        write_json(tmp / "record.json", record)
    print(f"record and grid: {out}")
    return JobResult(out, record)
