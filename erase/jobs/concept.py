"""``erase concept``: erase a concept with a concept-level (unlearning) method, scored before and after.

Writes ``OUT/delta.safetensors`` (only the changed tensors, with provenance) and ``OUT/record.json``,
together, when the edit is done; resumable from checkpoints (``--resume``).
"""

from __future__ import annotations

from dataclasses import dataclass

from erase.errors import EraseError
from erase.jobs.base import EditOptions, JobResult, open_run, option, positive, start_record
from erase.seeds import eval_image_seeds


def _method_help() -> str:
    from erase.methods import names

    return f"a concept-level method: {', '.join(names('unlearning'))}"


@dataclass(frozen=True, kw_only=True)
class ConceptJob(EditOptions):
    """Erase a concept (concept-level unlearning) and score it and its neighbours before and after."""

    COMMAND = "concept"

    concept: str = option(
        help="concept to erase, as defined in the concept file (e.g. red, circle)", positional=True
    )
    method: str = option("esd-x", _method_help)
    preserve: tuple[str, ...] | None = option(
        None, "comma-separated concepts to keep (default: the other concepts of its group)", grammar="list"
    )
    anchor: str = option(
        "default",
        "prompt to map the concept onto; default: the concept file's anchors (the prompt without the "
        "concept); 'none' for the empty prompt; placeholders as in 'a blue {shape}'",
    )
    eta: float | None = option(None, "ESD negative-guidance strength")
    watch: tuple[str, ...] = option(
        (),
        "more concepts to score before and after, e.g. another group's, to see what the edit costs them",
        grammar="list",
    )
    eval_seeds: tuple[int, ...] = option(
        eval_image_seeds(4), "held-out seeds for before/after scores", grammar="seeds"
    )
    eval_steps: int = option(25, "sampling steps of the before/after images")
    no_score: bool = option(False, "skip before/after scoring")

    def check(self) -> None:
        super().check()
        positive(self, "eval_steps")

    def named_settings(self) -> dict:
        return super().named_settings() | {"eta": self.eta}


def run(cfg: ConceptJob) -> JobResult:
    from erase.delta import DELTA_NAME
    from erase.io import write_json
    from erase.methods import get_method
    from erase.score import distribution_shift, take_embeddings
    from erase.unlearn import concept_inputs, run_method, write_delta

    # 1. Check inputs before loading anything.
    book = cfg.book()
    target = book.get(cfg.concept)
    method = get_method(cfg.method, "unlearning")
    if cfg.preserve is None:
        keep = [book.get(label) for label in target.group.labels if label != target.label]
    else:
        keep = [book.get(c) for c in cfg.preserve]
    if target.name in [k.name for k in keep]:
        raise EraseError(
            f"concept {target.name!r} is both erased and in --preserve; remove it from --preserve"
        )
    watched = [book.get(c) for c in cfg.watch if c not in {target.name, *(k.name for k in keep)}]
    if not cfg.no_score:
        cfg.check_judge([target, *keep, *watched])
    anchor = None if cfg.anchor.strip().lower() == "none" else cfg.anchor
    inputs = concept_inputs(target, keep, anchor)
    method.config(cfg.overrides)  # validates names and values now, not after loading the model
    out = cfg.out_dir("concept", f"{target.name}-{method.name}")
    rec = start_record(
        cfg, cfg.eval_seeds, kind=method.kind, preserve=[k.name for k in keep], overrides=cfg.overrides
    )
    rec.prompts("concepts", file=book.path)
    for name, texts in (
        ("targets", inputs.targets),
        ("anchors", inputs.anchors),
        ("preserve", inputs.preserve),
    ):
        rec.prompts(name, texts=texts)
    run = open_run(cfg, "concept", out, rec)

    with run:
        # 2. Load; score the base model.
        pipe = cfg.load()
        scored = [target, *keep, *watched]
        score = _scorer(cfg, pipe, scored)
        before = score()

        # 3. Erase.
        outcome = run_method(
            pipe, method.name, inputs, overrides=cfg.overrides, seed=cfg.seed, checkpoint=run.checkpoint
        )
        after = score()
        shift = distribution_shift(take_embeddings(before), take_embeddings(after))

        # 4. Write the delta and the record together.
        results = {
            "method_log": outcome.public_log,
            "changed_tensors": len(outcome.params),
            "edit_seconds": round(outcome.seconds, 2),
            "before": before,
            "after": after,
            "cmmd": shift,  # base vs edited images of each scored concept (None: no image encoder)
            "toy_settings": outcome.toy,
            "config": outcome.config.__dict__,
        }
        with run.commit() as tmp:
            concepts = {"erase": target.name, "preserve": [k.name for k in keep]}
            write_delta(
                tmp / DELTA_NAME, pipe, outcome, base_spec=cfg.model, seed=cfg.seed, concepts=concepts
            )
            record = rec.finish(results, trainable=outcome.trainable, device=str(pipe.device))
            write_json(tmp / "record.json", record)
        print(summary(scored, target, keep, before, after, outcome, out, shift))
    return JobResult(out, record)


def _scorer(cfg: ConceptJob, pipe, concepts):
    """Before/after scores on the same held-out prompts and seeds (None when scoring is off)."""
    from erase.score import score_concepts

    judge = None if cfg.no_score else cfg.load_judge(cfg.judge)

    def score():
        if judge is None:
            return None
        return score_concepts(
            pipe, judge, concepts, seeds=list(cfg.eval_seeds), steps=cfg.eval_steps, embeddings=True
        )

    return score


def summary(scored, target, keep, before, after, outcome, out, shift=None) -> str:
    from erase.report.console import before_after
    from erase.score import format_shift

    lines = [outcome.headline(f"erased {target.name!r}", "parameters edited")]
    if before is not None:
        roles = {c.name: "erased" if c is target else "kept" if c in keep else "watched" for c in scored}
        lines.append(before_after(scored, roles, before, after))
        lines.append(format_shift(shift, roles))
    lines += outcome.summary
    lines.append(f"delta and record: {out}")
    return "\n".join(lines)
