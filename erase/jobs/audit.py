"""``erase audit``: a grid of the same prompts and seeds drawn by the base, the erased and the
relearned models, each image judged (``erase.audit``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from erase.errors import EraseError
from erase.jobs.base import (
    JobResult,
    JudgeOptions,
    ModelOptions,
    OutOptions,
    at_least_zero,
    option,
    positive,
    start_record,
)
from erase.jobs.generate import SamplingOptions
from erase.seeds import eval_image_seeds


@dataclass(frozen=True, kw_only=True)
class AuditJob(ModelOptions, JudgeOptions, OutOptions, SamplingOptions):
    """A grid of the same prompts and seeds drawn by the base, erased and relearned models."""

    COMMAND = "audit"

    run: str = option(help="an erase run folder (or its delta file)", positional=True)
    concept: str | None = option(None, "the erased concept (default: the one the run erased)")
    model: str | None = option(None, "base model (default: the one the delta records)")
    delta: tuple[str, ...] = option(
        (),
        "another column: a delta of the same base (repeatable); relearned weights saved by "
        "`erase relearn --save-weights` under RUN/relearn are added by default",
        grammar="items",
        metavar="LABEL=PATH",
    )
    relearned: Path | None = option(
        None, "folder of relearned weights from `erase relearn --save-weights` (default RUN/relearn)"
    )
    no_relearned: bool = option(False, "leave out relearned weights")
    attacks: Path | None = option(
        None,
        "an `erase attack` folder whose attacks get a column each: the erased model drawing, for the "
        "concept's rows, the prompts each attack found, with the embedding it found loaded (default "
        "RUN/attack; relearning attacks keep no weights and get none: `erase relearn --save-weights`)",
    )
    no_attacks: bool = option(False, "leave out the attacks' columns")
    seeds: tuple[int, ...] = option(eval_image_seeds(2), "seeds, the same in every column", grammar="seeds")
    erased_prompts: int = option(4, "held-out prompts of the concept")
    neighbours: int = option(3, "concepts of its group, one prompt each")
    unrelated: int = option(2, "prompts from other groups")
    no_cache: bool = option(False, "redraw every image (default: reuse cached ones)")

    def check(self) -> None:
        super().check()
        positive(self, "steps", "erased_prompts", "batch_size")
        at_least_zero(self, "neighbours", "unrelated")


def columns(run: str, extra, relearned: Path | None):
    """Columns of an audit: the base, the run's erasure, its relearned weights, any extra deltas."""
    from erase.audit import Column
    from erase.delta import delta_path, read_meta
    from erase.specs import parse_labelled

    path = delta_path(run)
    meta = read_meta(path)
    cols = [Column("base", None), Column(f"erased ({meta['method']})", path)]
    if relearned is not None and relearned.is_dir():
        for f in sorted(relearned.glob("relearned-*.safetensors")):
            info = read_meta(f)
            cfg = info.get("config", {})
            steps = info.get("step", cfg.get("steps"))  # where the run stopped, if it stopped early
            cols.append(Column(f"relearned {cfg.get('optimizer')} lr={cfg.get('lr'):g}, {steps} steps", f))
    for item in extra:
        label, value = parse_labelled(item, "--delta", "oracle=runs/x")
        read_meta(delta_path(value))
        cols.append(Column(label, delta_path(value)))
    return meta, cols


def attack_columns(folder: Path, erased: Path, target) -> list:
    """A column per attack of the ``erase attack`` record in ``folder`` that found prompts (and an
    embedding) on the erased model: the erased model, each held-out prompt of the concept replaced by
    the one the attack found for it, what it found loaded while drawing. Relearning attacks, whose
    weights are not kept, and runs that diverged get none."""
    import contextlib
    import json

    from erase.attacks import get_attack
    from erase.audit import Column
    from erase.delta import sha256_of

    path = folder / "attack.json"
    try:
        res = json.loads(path.read_text())["results"]
    except (OSError, ValueError, KeyError):
        raise EraseError(f"{path} is not an `erase attack` record; run `erase attack` there first") from None
    if res["concept"] != target.name:
        return []  # found for another concept's prompts
    cols = []
    for row in res["attacks"]:
        found = dict(row["erased"])
        # None to draw: diverged, or nothing found but weights (relearning) or nothing at all (plain)
        if found.get("success") is None or (
            found["prompts"] == list(target.heldout) and not found.get("embedding")
        ):
            continue
        module = get_attack(row["attack"]).module
        tag = ""
        if found.get("embedding"):
            found["embedding"] = str(folder / found["embedding"])
            tag = sha256_of(Path(found["embedding"]))

        @contextlib.contextmanager
        def loaded(pipe, module=module, found=found):
            if not hasattr(module, "load"):
                yield
                return
            module.load(pipe, found)
            try:
                yield
            finally:
                module.unload(pipe, found)

        label = f"{row['attack']} on erased" + (f" ({found['token']})" if found.get("token") else "")
        prompts = dict(zip(target.heldout, found["prompts"]))
        cols.append(Column(label, erased, prompts=prompts, loaded=loaded, tag=tag))
    return cols


def run(cfg: AuditJob) -> JobResult:
    from erase import distributed
    from erase.audit import audit, audit_rows, cache_dir, presence_counts, presence_table, render_grid
    from erase.io import atomic_dir, write_json
    from erase.models import model_fingerprint
    from erase.report.console import presence

    # 1. Check inputs before loading anything.
    run_dir = Path(cfg.run)
    relearned = cfg.relearned or (run_dir / "relearn" if run_dir.is_dir() else None)
    if cfg.relearned is not None and not cfg.relearned.is_dir():
        raise EraseError(f"--relearned {cfg.relearned} is not a folder; pass the relearning output folder")
    meta, cols = columns(cfg.run, cfg.delta, None if cfg.no_relearned else relearned)
    base = cfg.model or meta["base_model"]
    book, target = cfg.erased_concept(meta, cfg.run)
    attacked = cfg.attacks or (run_dir / "attack" if run_dir.is_dir() else None)
    if cfg.attacks is not None and not (cfg.attacks / "attack.json").is_file():
        raise EraseError(
            f"--attacks {cfg.attacks} holds no attack.json; pass an `erase attack` output folder"
        )
    if attacked is not None and (attacked / "attack.json").is_file() and not cfg.no_attacks:
        cols += attack_columns(attacked, cols[1].delta, target)
    rows = audit_rows(
        book, target, n_erased=cfg.erased_prompts, n_neighbours=cfg.neighbours, n_unrelated=cfg.unrelated
    )
    _check_judge(cfg, rows)
    out = cfg.out_dir("audit", target.name, run_dir / "audit" if run_dir.is_dir() else None)
    rec = start_record(
        cfg,
        cfg.seeds,
        base_model=base,
        concept=target.name,
        columns=[
            {"label": c.label, "delta": str(c.delta) if c.delta else None}
            | ({"prompts": c.prompts} if c.prompts else {})
            for c in cols
        ],
        rows=[{"prompt": r.prompt, "role": r.role, "concept": r.concept.name} for r in rows],
    )
    rec.prompts("concepts", file=book.path)
    rec.prompts("rows", texts=[r.prompt for r in rows])

    # 2. Draw and judge every cell; one UNet, the deltas put on and taken off.
    pipe = cfg.load(base)
    judge = cfg.load_judge(cfg.judge)
    seeds = list(cfg.seeds)
    result = audit(
        pipe,
        judge,
        rows,
        cols,
        seeds,
        base_fingerprint=model_fingerprint(base),
        steps=cfg.steps,
        guidance=cfg.guidance,
        cache=None if cfg.no_cache else cache_dir(),
        batch_size=cfg.batch_size,
        split=True,
    )
    if not distributed.is_main():  # every process holds every cell; one draws the grid and writes
        return JobResult(None, {"cells": result["cells"]})
    table, counts = presence_table(result["cells"], cols), presence_counts(result["cells"], cols)
    image = render_grid(
        rows, cols, seeds, result, title=f"{meta['method']} on {target.name!r}: same prompts, same seeds"
    )

    # 3. Write the grid and the record together.
    results = {"presence": table, "presence_counts": counts} | {
        k: result[k] for k in ("cells", "drawn", "cached")
    }
    with atomic_dir(out) as tmp:
        image.save(tmp / "audit.png")
        record = rec.finish(results, device=str(pipe.device))
        write_json(tmp / "audit.json", record)
    print(presence(counts, [c.label for c in cols], len(seeds)))
    print(f"grid and record: {out} ({result['drawn']} images drawn, {result['cached']} from the cache)")
    return JobResult(out, record)


def _check_judge(cfg: AuditJob, rows) -> None:
    """The judge reads every row's group; a judge that reads only the concept's own group (the
    toy-fit reads shapes) is told how to leave the other groups out."""
    cfg.check_judge([r.concept for r in rows if r.role != "unrelated"])
    try:
        cfg.check_judge([r.concept for r in rows if r.role == "unrelated"])
    except EraseError as e:
        raise EraseError(f"{e}, or leave out the unrelated rows with --unrelated 0") from None
