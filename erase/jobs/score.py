"""``erase score``: how often the judge sees each concept in what the model draws from held-out prompts."""

from __future__ import annotations

from dataclasses import dataclass

from erase.errors import EraseError
from erase.jobs.base import JobResult, JudgeOptions, ModelOptions, OutOptions, option, positive, start_record
from erase.jobs.generate import SamplingOptions
from erase.seeds import eval_image_seeds

EVAL_SEEDS = eval_image_seeds(8)  # the held-out seeds every score reports by default


@dataclass(frozen=True, kw_only=True)
class ScoreJob(ModelOptions, JudgeOptions, OutOptions, SamplingOptions):
    """Score a concept and its neighbours with a judge (CLIP zero-shot, or the toy world's fit)."""

    COMMAND = "score"

    concept: str = option(help="concept to score, e.g. red")
    against: tuple[str, ...] = option((), "comma-separated concepts to score beside it", grammar="list")
    seeds: tuple[int, ...] = option(EVAL_SEEDS, "held-out seeds", grammar="seeds")

    def check(self) -> None:
        super().check()
        positive(self, "steps", "batch_size")


def run(cfg: ScoreJob) -> JobResult:
    from erase import distributed
    from erase.io import atomic_dir, write_json
    from erase.score import format_table, score_concepts

    # 1. Check inputs.
    book = cfg.book()
    target = book.get(cfg.concept)
    others = [book.get(c) for c in cfg.against]
    if target.name in [c.name for c in others]:
        raise EraseError(f"concept {target.name!r} is both the target and in --against; list it once")
    cfg.check_judge([target, *others])
    out = cfg.out_dir("score", target.name)
    concepts = [target, *others]
    rec = start_record(cfg, cfg.seeds)
    rec.prompts("concepts", file=book.path)
    for c in concepts:
        rec.prompts(c.name, texts=c.heldout)

    # 2. Load, generate, classify.
    pipe = cfg.load()
    judge = cfg.load_judge(cfg.judge)
    res = score_concepts(
        pipe,
        judge,
        concepts,
        seeds=list(cfg.seeds),
        steps=cfg.steps,
        guidance=cfg.guidance,
        batch_size=cfg.batch_size,
    )
    if not distributed.is_main():  # every process holds the scores; one prints and writes them
        return JobResult(None, {"results": res})
    print(format_table(res, f"{cfg.model}: held-out prompts x {len(cfg.seeds)} seeds, judge {cfg.judge}"))

    # 3. Record.
    with atomic_dir(out) as tmp:
        record = rec.finish(res, device=str(pipe.device))
        write_json(tmp / "record.json", record)
    print(f"record: {out / 'record.json'}")
    return JobResult(out, record)
