"""``erase untrain``: undo the training on specific data (data-level) and score it against its oracle.

Its ideal is the model retrained without the forget set (the untraining oracle), so every metric
is shown for the original, the edited model and that oracle (``erase.untrain``).
"""

from __future__ import annotations

from dataclasses import dataclass

from erase.jobs.base import EditOptions, JobResult, open_run, option, positive, start_record
from erase.seeds import eval_image_seeds
from erase.stats import rate


def _method_help() -> str:
    from erase.methods import names

    return f"a data-level method: {', '.join(names('untraining'))}"


@dataclass(frozen=True, kw_only=True)
class UntrainJob(EditOptions):
    """Untrain specific training data (data-level) and score it against its oracle."""

    COMMAND = "untrain"

    forget: str = option(help="a folder of images with captions, or a toy spec: toy:color=red:n=32")
    retain: str | None = option(
        None, "a folder or toy spec (default for a toy forget set: toy:rest:n=256; 'none' for no retain set)"
    )
    method: str = option("hamu", _method_help)
    oracle: str = option(
        "auto", "auto (the cached toy oracle for this forget set), none, or a model that never saw it"
    )
    concept: str | None = option(
        None, "what the forget set shows, e.g. red: named in the delta, so relearn and audit default to it"
    )
    score: tuple[str, ...] = option(
        (), "concepts to score before/after with the judge, e.g. red", grammar="list"
    )
    eval_seeds: tuple[int, ...] = option(eval_image_seeds(4), "held-out seeds of the scores", grammar="seeds")
    eval_steps: int = option(10, "sampling steps of the scored images")

    def check(self) -> None:
        super().check()
        positive(self, "eval_steps")

    @property
    def retain_spec(self) -> str | None:
        spec = self.retain if self.retain is not None else ("toy:rest:n=256" if self.toy_forget else None)
        return None if spec and spec.strip().lower() == "none" else spec

    @property
    def toy_forget(self) -> bool:
        return self.forget.startswith("toy:")


def _oracle(cfg: UntrainJob, forget_ids: list[int]) -> tuple[str | None, str | None]:
    """The oracle's model spec, and the key of a toy oracle that is not built yet."""
    if cfg.oracle == "auto" and cfg.toy_forget:
        from erase.recipes.oracle import forget_oracle

        found, key = forget_oracle(cfg.forget, forget_ids)
        return (f"toy+{found}" if found else None), (None if found else key)
    return (None if cfg.oracle in ("auto", "none") else cfg.oracle), None


def run(cfg: UntrainJob) -> JobResult:
    from erase.data import resolve_sets, toy_ids
    from erase.methods import get_method
    from erase.untrain import oracle_kind

    # 1. Check inputs before loading a model.
    method = get_method(cfg.method, "untraining")
    method.config(cfg.overrides)
    forget, retain = resolve_sets(cfg.forget, cfg.retain_spec, seed=cfg.seed)
    forget_ids = toy_ids(cfg.forget, seed=cfg.seed) if cfg.toy_forget else []
    scored = []
    if cfg.score:
        book = cfg.book()
        scored = [book.get(c) for c in cfg.score]
        cfg.check_judge(scored)
    oracle, missing_key = _oracle(cfg, forget_ids)
    o_kind = oracle_kind(oracle)
    out = cfg.out_dir("untrain", method.name)
    rec = start_record(
        cfg,
        [cfg.seed],
        kind=method.kind,
        retain=cfg.retain_spec,
        overrides=cfg.overrides,
        oracle=oracle,
        oracle_kind=o_kind,
        reconstructed=bool(getattr(method.module, "RECONSTRUCTED", False)),
    )
    rec.prompts("forget", texts=forget.prompts)
    if retain is not None:
        rec.prompts("retain", texts=retain.prompts)
    if missing_key:
        print(
            f"no oracle cached for this forget set ({missing_key}); build it with `erase toy oracle "
            f"--forget '{cfg.forget}' --seed {cfg.seed}` (about 10 minutes) to score against the ideal"
        )
    with open_run(cfg, "untrain", out, rec) as run:
        return _untrain(cfg, run, rec, method, forget, retain, forget_ids, scored, oracle, o_kind, out)


def _untrain(cfg, run, rec, method, forget, retain, forget_ids, scored, oracle, o_kind, out) -> JobResult:
    from erase.delta import DELTA_NAME
    from erase.io import write_json
    from erase.methods.base import EraseInputs
    from erase.score import distribution_shift, score_concepts, take_embeddings
    from erase.unlearn import run_method, write_delta
    from erase.untrain import format_report, make_probes, measure, nearest_note

    # 2. Load; fixed probes; the original's and the oracle's numbers.
    pipe = cfg.load()
    sched = pipe.scheduler
    probes = make_probes(pipe, forget, retain, seed=cfg.seed)
    judge = cfg.load_judge(cfg.judge) if scored else None

    def score(model):
        # The same held-out prompts and seeds for the original, the edit and the oracle.
        seeds = list(cfg.eval_seeds)
        return (
            score_concepts(
                model, judge, scored, seeds=seeds, steps=cfg.eval_steps, progress=False, embeddings=True
            )
            if scored
            else None
        )

    rows, scores, oracle_preds = {}, {}, None
    if oracle:
        opipe = cfg.load(oracle)
        oracle_preds = probes["forget"].predictions(opipe.unet, sched)
        rows["oracle"] = measure(opipe.unet, sched, probes, oracle_preds)
        scores["oracle"] = score(opipe)
        del opipe
    rows["original"] = measure(pipe.unet, sched, probes, oracle_preds)
    scores["original"] = score(pipe)

    # 3. Untrain.
    inputs = EraseInputs(forget=forget, retain=retain)
    outcome = run_method(
        pipe, method.name, inputs, overrides=cfg.overrides, seed=cfg.seed, checkpoint=run.checkpoint
    )
    rows["edited"] = measure(pipe.unet, sched, probes, oracle_preds)
    scores["edited"] = score(pipe)
    rows = {k: rows[k] for k in ("original", "edited", "oracle") if k in rows}
    table = format_report(rows, method.kind, oracle, o_kind)
    emb = {k: take_embeddings(v) for k, v in scores.items()}
    # The edit against the original, and against the oracle it should look like (data-level).
    shift = {
        f"edited vs {k}": distribution_shift(emb[k], emb["edited"])
        for k in ("original", "oracle")
        if k in emb
    }

    # 4. Delta and record together.
    results = {
        "metrics": rows,
        "scores": scores if scored else None,
        "cmmd": shift if scored else None,
        "note": nearest_note(rows),
        "method_log": outcome.public_log,
        "edit_seconds": round(outcome.seconds, 2),
        "summary": outcome.summary,
        "forget_ids": forget_ids,
        "probed_samples": {k: len(p.enc) for k, p in probes.items()},  # a large set: a subset
        "config": outcome.config.__dict__,
        "table": table,
    }
    with run.commit() as tmp:
        concepts = {"forget": cfg.forget, "retain": cfg.retain_spec, "forget_ids": forget_ids}
        concepts |= {"shows": cfg.concept} if cfg.concept else {}
        write_delta(tmp / DELTA_NAME, pipe, outcome, base_spec=cfg.model, seed=cfg.seed, concepts=concepts)
        record = rec.finish(results, trainable=outcome.trainable, device=str(pipe.device))
        write_json(tmp / "record.json", record)
    print(_summary(outcome, len(forget.images), results, scored, scores, shift, out))
    return JobResult(out, record)


def _summary(outcome, n_forget, results, scored, scores, shift, out) -> str:
    from erase.score import format_shift

    lines = [outcome.headline(f"on {n_forget} forget samples", "parameters trained"), results["table"]]
    lines += [results["note"]] if results["note"] else []
    lines += outcome.summary
    for c in scored:
        res = {k: v["concepts"][c.name] for k, v in scores.items()}
        line = ", ".join(f"{k} {rate(r['hits'], r['n'])}" for k, r in res.items())
        lines.append(f"{c.name} accuracy (held-out prompts): {line}")
    for label, one in shift.items() if scored else ():
        lines.append(f"{label}: {format_shift(one)}")
    return "\n".join([*lines, f"delta and record: {out}"])
