"""``erase relearn``: attack an erasure by fine-tuning it on examples of the concept, under several
optimizers, learning rates and seeds, and count the steps until it comes back (``erase.relearn``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from erase.errors import EraseError
from erase.jobs.base import FieldError, JobResult, RunOptions, open_run, option, positive, start_record

# Relearning learning rates per optimizer: on the toy world (all parameters, batch 4) SGD at 0.1
# wrecks the model and at 0.5 diverges; 0.03 is the largest that learns. Adam at 3e-4 is the setting
# that brought an erased circle back within 12 steps when this was first measured.
DEFAULT_LRS: dict[str, tuple[float, ...]] = {
    "sgd": (0.03,),
    "sgdm": (0.003,),
    "adam": (3e-4,),
    "adamw": (3e-4,),
}
RELEARN_PARAMS = ("all", "xattn", "xattn-kv", "non-xattn", "changed")


@dataclass(frozen=True, kw_only=True)
class RelearnJob(RunOptions):
    """Attack an erasure by relearning, under several optimizers."""

    COMMAND = "relearn"

    run: str = option(help="an erase run folder (or its delta file)", positional=True)
    concept: str | None = option(None, "concept to relearn (default: the one the run erased)")
    model: str | None = option(None, "base model (default: the one the delta records)")
    optimizers: dict[str, tuple[float, ...]] = option(
        {"sgd": DEFAULT_LRS["sgd"], "adam": DEFAULT_LRS["adam"]},
        "optimizers and their learning rates: --optimizers sgd,adam (sgd, sgdm, adam, adamw) with "
        "--lrs '1e-4,3e-4' for every optimizer or --lrs adam=1e-4 for one (repeatable); defaults: "
        + ", ".join(f"{k} {v[0]:g}" for k, v in DEFAULT_LRS.items()),
        grammar="optimizers",
    )
    steps: int = option(100, "budget of relearning steps")
    eval_every: int | None = option(None, "evaluate every k steps (default: steps / 10)")
    batch_size: int = option(4, "examples per step")
    params: str = option("all", "what relearning trains: " + ", ".join(RELEARN_PARAMS))
    seeds: tuple[int, ...] = option((0, 1, 2), "relearning seeds: data order and noise", grammar="seeds")
    tau: float = option(0.8, "resurgence at tau x the original's accuracy")
    snr_gamma: float | None = option(
        None, "Min-SNR loss weighting (the toy world was trained with 5); default: the plain loss"
    )
    examples: int = option(16, "examples drawn by the original model")
    data: Path | None = option(None, "a folder of images with captions instead of drawn examples")
    others: tuple[str, ...] | None = option(
        None, "concepts whose damage to track (default: the rest of the group)", grammar="list"
    )
    oracle: str | None = option(None, "a model that never learned the concept: same attack, ratio reported")
    eval_seeds: tuple[int, ...] = option(
        tuple(range(1000, 1006)), "held-out seeds for the concept", grammar="seeds"
    )
    other_seeds: tuple[int, ...] = option(
        (1000, 1001), "held-out seeds for the other concepts", grammar="seeds"
    )
    eval_steps: int = option(10, "sampling steps of evaluation images")
    save_weights: bool = option(
        False, "also save each optimizer x lr's relearned weights (first seed) as a delta, for `erase audit`"
    )

    def check(self) -> None:
        super().check()
        if not self.optimizers:
            raise FieldError("optimizers", "names none; pass e.g. --optimizers sgd,adam")
        for name, lrs in self.optimizers.items():
            if name not in DEFAULT_LRS:
                raise FieldError("optimizers", f"{name!r} is unknown; choose from {', '.join(DEFAULT_LRS)}")
            if not lrs or any(not lr > 0 for lr in lrs):
                raise FieldError("optimizers", f"{name}: learning rate must be positive, got {list(lrs)}")
        positive(self, "steps", "eval_every", "batch_size", "examples", "eval_steps", "snr_gamma")
        if self.params not in RELEARN_PARAMS:
            raise FieldError("params", f"must be one of {', '.join(RELEARN_PARAMS)}, got {self.params!r}")
        if not 0 < self.tau <= 1:
            raise FieldError("tau", f"must be in (0, 1], got {self.tau}")

    def configs(self) -> list:
        """One ``RelearnConfig`` per optimizer x learning rate x seed, in that order."""
        from erase.relearn import RelearnConfig

        every = self.eval_every or max(1, self.steps // 10)
        shared = {
            "steps": self.steps,
            "batch_size": self.batch_size,
            "eval_every": every,
            "params": self.params,
        }
        shared |= {"tau": self.tau, "snr_gamma": self.snr_gamma}
        return [
            RelearnConfig(optimizer=o, lr=lr, seed=seed, **shared)
            for o, lrs in self.optimizers.items()
            for lr in lrs
            for seed in self.seeds
        ]


def run(cfg: RelearnJob) -> JobResult:
    from erase import distributed
    from erase.delta import delta_path, read_meta
    from erase.relearn import load_image_folder

    # 1. Check inputs before loading anything.
    path = delta_path(cfg.run)
    meta = read_meta(path)
    cfg.check_judge()
    book = cfg.book()
    concepts = meta.get("concepts", {})
    name = cfg.concept or concepts.get("erase") or concepts.get("shows")
    if not name:
        raise EraseError(
            f"{path} names no erased concept (a data-level run?); pass --concept NAME to relearn"
        )
    target = book.get(name)
    if cfg.others is None:
        others = [book.get(label) for label in target.group.labels if label != target.label]
    else:
        others = [book.get(c) for c in cfg.others]
    configs = cfg.configs()
    examples = load_image_folder(cfg.data) if cfg.data else None
    default_out = (Path(cfg.run) / "relearn") if Path(cfg.run).is_dir() else None
    out = cfg.out_dir("relearn", target.name, default_out)
    rec = start_record(
        cfg,
        cfg.eval_seeds,
        delta=str(path),
        method=meta["method"],
        kind=meta.get("kind"),
        base_model=cfg.model or meta["base_model"],
        concept=target.name,
        others=[c.name for c in others],
        configs=[c.__dict__ for c in configs],
        # Each process runs (and the main one checkpoints) its share of the configs, so a
        # resume must split them the same way.
        processes=distributed.world()[1],
    )
    rec.prompts("concepts", file=book.path)
    rec.prompts(target.name, texts=target.heldout)
    with open_run(cfg, "relearn", out, rec, stable_out=default_out is not None) as run:
        return _attack(cfg, run, rec, path, meta, target, others, configs, examples, out)


def _attack(cfg, run, rec, path, meta, target, others, configs, examples, out) -> JobResult:
    from erase import distributed
    from erase.delta import apply_delta, delta_tensor_names
    from erase.models import model_fingerprint
    from erase.relearn import Evaluator, attack, encode_examples, generated_examples, summarize

    # 2. The original model: its accuracy is the bar, and it draws the relearning examples.
    base = cfg.model or meta["base_model"]
    pipe = cfg.load(base)
    judge = cfg.load_judge(cfg.judge)
    seeds = {"seeds": list(cfg.eval_seeds), "other_seeds": list(cfg.other_seeds), "steps": cfg.eval_steps}
    evaluate = Evaluator(pipe, judge, target, others, **seeds)
    original = evaluate()
    if examples is None:
        examples = generated_examples(pipe, target.prompts, cfg.examples)
    rec.prompts("relearning examples", texts=examples.prompts)
    data = encode_examples(pipe, examples)

    # 3. Apply the erasure and attack it; then the oracle, if any, with the same data and runs.
    fingerprint = model_fingerprint(base)
    apply_delta(pipe.unet, path, fingerprint)
    keep = _Keeper(pipe, base, fingerprint, meta, path, configs[0].seed) if cfg.save_weights else None
    runs = attack(
        pipe,
        data,
        configs,
        evaluate,
        changed=delta_tensor_names(path),
        on_done=keep,
        checkpoint=run.checkpoint,
    )
    acc0 = original["accuracy"][target.name]
    rows = summarize(runs, target.name, acc0)
    oracle_runs, oracle_rows = [], None
    if cfg.oracle:
        del pipe
        opipe = cfg.load(cfg.oracle)
        oracle_runs = attack(
            opipe, data, configs, Evaluator(opipe, judge, target, others, **seeds), checkpoint=run.checkpoint
        )
        oracle_rows = summarize(oracle_runs, target.name, acc0)
    # Each process kept the weights of its own configs; the main one writes them all.
    relearned = dict(distributed.gather(list(keep.kept.items()))) if keep else {}
    if not distributed.is_main():
        return JobResult(None, {"runs": runs, "oracle_runs": oracle_runs})
    results = {
        "concept": target.name,
        "method": meta["method"],
        "original": original,
        "summary": rows,
        "runs": runs,
        "oracle": {"model": cfg.oracle, "summary": oracle_rows, "runs": oracle_runs} if cfg.oracle else None,
        "images_per_point": evaluate.images_per_point,
    }
    return _write(cfg, run, rec, results, relearned, len(examples.images), out, str(judge.device))


def _write(cfg, run, rec, results, relearned: dict, n_examples: int, out, device: str) -> JobResult:
    from erase.delta import save_tensors
    from erase.io import write_json
    from erase.relearn import format_summary
    from erase.report.plots import plot_relearning

    name, runs, rows = results["concept"], results["runs"], results["summary"]
    acc0 = results["original"]["accuracy"][name]
    erased = runs[0]["curve"][0]["accuracy"][name]
    oracle = results["oracle"]
    oracle_rows = {(r["optimizer"], r["lr"]): r for r in oracle["summary"]} if oracle else None
    results["table"] = format_summary(rows, name, acc0, erased, oracle=oracle_rows)
    print(results["table"])

    # 4. Record, plot.
    with run.commit() as tmp:
        plot_relearning(
            runs,
            name,
            original=acc0,
            erased=erased,
            tau=cfg.tau,
            path=tmp / "relearn.png",
            title=f"{results['method']} on {name!r}: relearning on {n_examples} examples",
            oracle_runs=oracle["runs"] if oracle else (),
        )
        for file, (tensors, info) in relearned.items():
            save_tensors(tmp / file, tensors, info)
        record = rec.finish(results, trainable=runs[0]["trainable_parameters"], device=device)
        write_json(tmp / "relearn.json", record)
    print(f"curves, table and plot: {out}")
    return JobResult(out, record)


class _Keeper:
    """Keeps each optimizer x lr's relearned weights (first seed) for ``erase audit``; held in
    memory until the output folder is written, so a crash leaves no stray file."""

    def __init__(self, pipe, base: str, fingerprint: str, meta: dict, path, first_seed: int):
        self.pipe, self.first_seed, self.kept = pipe, first_seed, {}
        self.info = {
            "base_model": base,
            "base_fingerprint": fingerprint,
            "method": f"{meta['method']} relearned",
            "kind": meta.get("kind"),
            "concepts": meta.get("concepts", {}),
            "erasure": str(path),
        }

    def __call__(self, cfg, names) -> None:
        import torch

        if cfg.seed != self.first_seed:
            return
        named = dict(self.pipe.unet.named_parameters())
        tensors = {n: named[n].detach().to("cpu", torch.float32).clone() for n in names}
        info = self.info | {"config": cfg.__dict__, "seed": cfg.seed}
        self.kept[f"relearned-{cfg.optimizer}-lr{cfg.lr:g}.safetensors"] = (tensors, info)
