"""``erase relearn``: attack an erasure by fine-tuning it on examples of the concept, under several
optimizers, learning rates and seeds, and count the steps until it comes back (``erase.relearn``)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from erase.attacks.relearn import Config as RelearnAttack
from erase.errors import EraseError
from erase.jobs.base import (
    FieldError,
    JobResult,
    RunOptions,
    open_run,
    option,
    positive,
    record_config,
    start_record,
)
from erase.optim import DEFAULT_LRS, RELEARN_PARAMS
from erase.seeds import eval_image_seeds, split_of

# The relearning attack's settings (erase.attacks.relearn) are the only copy of its defaults.
ATTACK = RelearnAttack()


@dataclass(frozen=True, kw_only=True)
class RelearnJob(RunOptions):
    """Attack an erasure by relearning, under several optimizers."""

    COMMAND = "relearn"

    run: str = option(help="an erase run folder (or its delta file)", positional=True)
    concept: str | None = option(None, "concept to relearn (default: the one the run erased)")
    model: str | None = option(None, "base model (default: the one the delta records)")
    optimizers: dict[str, tuple[float, ...]] = option(
        {"sgd": DEFAULT_LRS["sgd"], "adam": DEFAULT_LRS["adam"]},
        "optimizers and their learning rates: --optimizers sgd,adam (" + ", ".join(DEFAULT_LRS) + ") with "
        "--lrs '1e-4,3e-4' for every optimizer or --lrs adam=1e-4 for one (repeatable); defaults: "
        + ", ".join(f"{k} {v[0]:g}" for k, v in DEFAULT_LRS.items()),
        grammar="optimizers",
    )
    steps: int = option(ATTACK.steps, "budget of relearning steps")
    eval_every: int | None = option(None, "evaluate every k steps (default: steps / 10)")
    batch_size: int = option(ATTACK.batch_size, "examples per step")
    params: str = option(ATTACK.params, "what relearning trains: " + ", ".join(RELEARN_PARAMS))
    seeds: tuple[int, ...] = option((0, 1, 2), "relearning seeds: data order and noise", grammar="seeds")
    tau: float = option(0.8, "resurgence at tau x the original's accuracy")
    snr_gamma: float | None = option(
        ATTACK.snr_gamma, "Min-SNR loss weighting (the toy world was trained with 5); default: the plain loss"
    )
    examples: int = option(16, "examples drawn by the original model")
    data: Path | None = option(None, "a folder of images with captions instead of drawn examples")
    others: tuple[str, ...] | None = option(
        None, "concepts whose damage to track (default: the rest of the group)", grammar="list"
    )
    oracle: str = option(
        "auto",
        "a model that never learned the concept, attacked the same way to calibrate the budget: a model "
        "(toy+erase/toy/oracles/color=red), an edit of the base (run folder or delta), or a relearning "
        "folder that already attacked it with these settings; 'auto': the toy world's oracle for the "
        "concept when there is one; 'none': uncalibrated",
    )
    lrs_from: str | None = option(
        None,
        "a learning-rate sweep (a relearning folder): each optimizer runs at the rate the sweep chose "
        "(fewest steps to resurgence, erase.relearn.choose_lr); its seeds must differ from --seeds",
    )
    select: str = option(
        "fastest",
        "the rule a sweep chooses each optimizer's rate by (erase.relearn.choose_lr), read by a later "
        "--lrs-from: 'fastest' (fewest steps to resurgence) or 'selective' (the fastest of the rates "
        "whose runs kept the other concepts at >= tau x their start where they stopped)",
    )
    stop_at_resurgence: bool = option(
        False, "end each run at resurgence (a sweep's shortcut; the other concepts are then read there)"
    )
    eval_seeds: tuple[int, ...] = option(
        eval_image_seeds(6), "held-out seeds for the concept", grammar="seeds"
    )
    other_seeds: tuple[int, ...] = option(
        eval_image_seeds(2), "held-out seeds for the other concepts", grammar="seeds"
    )
    others_at: str = option(
        "every",
        "when to score the other concepts: at 'every' point, or at the start and the 'end' only (a long "
        "study's cheaper setting; the curve of the others is then two points)",
    )
    eval_steps: int = option(10, "sampling steps of evaluation images")
    base_check: bool = option(
        False,
        "also attack the original model the same way: whether the attack keeps the concept where "
        "nothing was erased, and what it does to the other concepts by itself",
    )
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
            if (not lrs and self.lrs_from is None) or any(not lr > 0 for lr in lrs):
                raise FieldError("optimizers", f"{name}: learning rate must be positive, got {list(lrs)}")
        positive(self, "steps", "eval_every", "batch_size", "examples", "eval_steps", "snr_gamma")
        if self.params not in RELEARN_PARAMS:
            raise FieldError("params", f"must be one of {', '.join(RELEARN_PARAMS)}, got {self.params!r}")
        if not 0 < self.tau <= 1:
            raise FieldError("tau", f"must be in (0, 1], got {self.tau}")
        from erase.relearn import SELECTION_RULES

        if self.select not in SELECTION_RULES:
            raise FieldError("select", f"must be one of {', '.join(SELECTION_RULES)}, got {self.select!r}")
        if self.select == "selective" and self.others == ():
            raise FieldError(
                "select", "'selective' reads the damage to the other concepts; name some in --others"
            )
        if self.others_at not in ("every", "end"):
            raise FieldError("others_at", f"must be 'every' or 'end', got {self.others_at!r}")
        if not self.oracle.strip():
            raise FieldError("oracle", "is empty; pass a model, a run folder, 'auto' or 'none'")

    def chosen_lrs(self) -> dict[str, tuple[float, ...]]:
        """The learning rates to run: ``optimizers``', or with ``lrs_from`` each one's rate chosen by
        the sweep there. Reads the sweep's record (small JSON), so bad input fails before any model."""
        if self.lrs_from is None:
            return self.optimizers
        if any(self.optimizers.values()):
            raise FieldError("lrs_from", "takes the rates from the sweep; give --lrs or --lrs-from, not both")
        sweep = read_relearning(self.lrs_from)
        chosen = {row["optimizer"]: row for row in sweep.get("chosen", [])}
        missing = [o for o in self.optimizers if o not in chosen]
        if missing:
            raise FieldError(
                "lrs_from",
                f"{self.lrs_from} swept no {', '.join(missing)}; sweep them there or drop them from --optimizers",
            )
        tuned = {seed for row in chosen.values() for seed in row["seeds"]}
        if tuned & set(self.seeds):
            raise FieldError(
                "seeds",
                f"{sorted(tuned & set(self.seeds))} chose the learning rates in {self.lrs_from}; report on "
                "other seeds (erase.seeds: tuning and evaluation seeds are disjoint)",
            )
        rough = [o for o in self.optimizers if chosen[o].get("selective") is False and chosen[o]["came_back"]]
        if rough:
            print(
                f"warning: in {self.lrs_from} no rate of {', '.join(rough)} that brought the concept back "
                "kept the other concepts; the least damaging one is used"
            )
        weak = [o for o in self.optimizers if not chosen[o].get("came_back", True)]
        if weak:  # the run goes on: its verdicts will say "too weak to judge" where that is so
            print(
                f"warning: in {self.lrs_from} no rate of {', '.join(weak)} brought the concept back "
                "(median over seeds); the sweep's best is used, and it may be too weak to judge"
            )
        return {o: (chosen[o]["lr"],) for o in self.optimizers}

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
        shared |= {
            "tau": self.tau,
            "snr_gamma": self.snr_gamma,
            "stop_at_resurgence": self.stop_at_resurgence,
        }
        return [
            RelearnConfig(optimizer=o, lr=lr, seed=seed, **shared)
            for o, lrs in self.chosen_lrs().items()
            for lr in lrs
            for seed in self.seeds
        ]


def read_relearning(spec: str | Path, *, record: bool = False) -> dict:
    """The results (or with ``record``, the whole record) of a finished ``erase relearn``: its
    folder, its run folder, or relearn.json."""
    import json

    p = Path(spec)
    for cand in (p, p / "relearn.json", p / "relearn" / "relearn.json"):
        if cand.is_file():
            try:
                whole = json.loads(cand.read_text())
                return whole if record else whole["results"]
            except (ValueError, KeyError):
                raise EraseError(f"{cand} is not a relearning record; run `erase relearn` again") from None
    raise EraseError(f"{spec} holds no relearn.json; run `erase relearn` there first")


def find_oracle_for(cfg: RelearnJob, meta: dict, target) -> str | None:
    """What ``--oracle`` names: None (uncalibrated), a relearning record, or a model to load."""
    if cfg.oracle == "none":
        return None
    if cfg.oracle != "auto":
        return cfg.oracle
    if meta.get("oracle") or (cfg.model or meta["base_model"]) != "toy":
        return None  # attacking an oracle itself, or a model with no oracle we could know of
    from erase.recipes.oracle import find_oracle

    try:
        found = find_oracle([f"{target.group.name}={target.label}"])
    except EraseError:  # a concept of another concept file: no toy axis, no oracle
        return None
    return f"toy+{found}" if found else None


def run(cfg: RelearnJob) -> JobResult:
    from erase import distributed
    from erase.delta import delta_path, read_meta
    from erase.relearn import load_image_folder

    # 1. Check inputs before loading anything.
    path = delta_path(cfg.run)
    meta = read_meta(path)
    book, target = cfg.erased_concept(meta, path)
    if cfg.others is None:
        others = [book.get(label) for label in target.group.labels if label != target.label]
    else:
        others = [book.get(c) for c in cfg.others]
    cfg.check_judge([target, *others])
    configs = cfg.configs()
    oracle = _oracle(cfg, meta, target, configs)
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
        lrs_from=cfg.lrs_from and {"sweep": cfg.lrs_from, "chosen": {c.optimizer: c.lr for c in configs}},
        oracle=oracle if isinstance(oracle, str) or oracle is None else {"reused": cfg.oracle},
        # Each process runs (and the main one checkpoints) its share of the configs, so a
        # resume must split them the same way.
        processes=distributed.world()[1],
        seed_split={"images": split_of(cfg.eval_seeds), "relearning": split_of(cfg.seeds, "relearn")},
    )
    rec.prompts("concepts", file=book.path)
    rec.prompts(target.name, texts=target.heldout)
    with open_run(cfg, "relearn", out, rec, stable_out=default_out is not None) as run:
        return _attack(cfg, run, rec, path, meta, target, others, configs, examples, out, oracle)


def _oracle(cfg: RelearnJob, meta: dict, target, configs) -> str | dict | None:
    """The calibration: None, a model spec to attack, or (reused) an oracle's relearning results,
    which must come from the very same attack."""
    from dataclasses import asdict

    spec = find_oracle_for(cfg, meta, target)
    if spec is None:
        return None
    p = Path(spec)
    if (p / "relearn.json").is_file() or (p / "relearn" / "relearn.json").is_file():
        record = read_relearning(p, record=True)
        done = record["results"]
        if (done.get("oracle") or {}).get("model") != "itself":
            raise FieldError("oracle", f"{spec} is the relearning of {done['method']!r}, not of an oracle")
        mine = record_config(cfg)
        theirs = record["config"]
        differ = [k for k in SAME_ATTACK if mine.get(k) != theirs.get(k)]
        if done["concept"] != target.name:
            differ.append("concept")
        if [r["config"] for r in done["runs"]] != [asdict(c) for c in configs]:
            differ.append("optimizers, rates, seeds or budget")
        if differ:
            raise FieldError(
                "oracle",
                f"{spec} attacked with other settings ({', '.join(differ)}); calibrate with this run's",
            )
        return done
    if p.is_absolute() or p.name == "relearn" or p.suffix == ".safetensors":
        # A path (a study's run:NAME is one): it must be there now, not after the whole attack.
        if not p.exists():
            raise FieldError("oracle", f"{spec} does not exist; run the oracle's relearning first")
        if p.name == "relearn":
            raise FieldError("oracle", f"{spec} holds no relearn.json; that relearning did not finish")
    if p.is_dir() or p.suffix == ".safetensors":
        return f"{cfg.model or meta['base_model']}+{spec}"  # an edit of the same base
    return spec


# What a reused oracle relearning must share with this run besides its configs.
SAME_ATTACK = (
    "model",
    "concepts",
    "judge",
    "neutral",
    "examples",
    "data",
    "eval_seeds",
    "eval_steps",
    "params",
)


def _attack(cfg, run, rec, path, meta, target, others, configs, examples, out, oracle) -> JobResult:
    from erase import distributed
    from erase.delta import apply_delta, delta_tensor_names
    from erase.models import model_fingerprint
    from erase.relearn import Evaluator, attack, encode_examples, generated_examples, summarize

    # 2. The original model: its accuracy is the bar, and it draws the relearning examples.
    base = cfg.model or meta["base_model"]
    pipe = cfg.load(base)
    judge = cfg.load_judge(cfg.judge)
    seeds = {"seeds": list(cfg.eval_seeds), "other_seeds": list(cfg.other_seeds), "steps": cfg.eval_steps}
    seeds["others_at"] = cfg.others_at
    evaluate = Evaluator(pipe, judge, target, others, **seeds)
    fingerprint = model_fingerprint(base)
    original, start, reused = _points_from_edit(cfg, evaluate, path, meta, fingerprint, str(pipe.device))
    original = original or evaluate()
    if examples is None:
        examples = generated_examples(pipe, target.prompts, cfg.examples)
    rec.prompts("relearning examples", texts=examples.prompts)
    data = encode_examples(pipe, examples)

    # 3. Apply the erasure and attack it; then the oracle, if any, with the same data and runs.
    apply_delta(pipe.unet, path, fingerprint)
    keep = _Keeper(pipe, base, fingerprint, meta, path, configs[0].seed) if cfg.save_weights else None
    bar = (target.name, cfg.tau * original["accuracy"][target.name])
    runs = attack(
        pipe,
        data,
        configs,
        evaluate,
        changed=delta_tensor_names(path),
        on_done=keep,
        checkpoint=run.checkpoint,
        bar=bar,
        start=start,
    )
    acc0 = original["accuracy"][target.name]
    rows = summarize(runs, target.name, acc0)
    pipe = None  # the attacked model, freed before the oracle or the original is loaded
    oracle_runs = _oracle_runs(cfg, oracle, data, configs, judge, target, others, seeds, run, bar)
    oracle_rows = summarize(oracle_runs, target.name, acc0) if oracle is not None else None
    if oracle is None and meta.get("oracle"):  # the model attacked is an oracle: its own runs calibrate
        oracle, oracle_rows = "itself", rows
    base_runs = _base_check(cfg, base, data, configs, judge, target, others, seeds, run, bar, original)
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
        "oracle": None
        if oracle is None
        else {
            "model": oracle if isinstance(oracle, str) else cfg.oracle,
            "summary": oracle_rows,
            "runs": oracle_runs,
        },
        "images_per_point": evaluate.images_per_point,
        # Points read from the edit's record instead of drawn again (the same images).
        "reused_scores": reused,
        "base": {"summary": summarize(base_runs, target.name, acc0), "runs": base_runs}
        if base_runs
        else None,
    }
    return _write(cfg, run, rec, results, relearned, len(examples.images), out, str(judge.device))


def _oracle_runs(cfg, oracle, data, configs, judge, target, others, seeds, run, bar) -> list[dict]:
    """The calibration's runs: none, an oracle relearning's (reused), or the same attack on the oracle."""
    from erase.relearn import Evaluator, attack

    if oracle is None or isinstance(oracle, dict):
        return oracle["runs"] if oracle else []
    opipe = cfg.load(oracle)
    return attack(
        opipe,
        data,
        configs,
        Evaluator(opipe, judge, target, others, **seeds),
        checkpoint=run.checkpoint,
        bar=bar,
    )


def _points_from_edit(cfg, evaluate, path, meta: dict, fingerprint: str, device: str) -> tuple:
    """The original model's point and the erasure's starting point, read from the before/after
    scores of the edit's record where they cover them (same weights, prompts, seeds, sampling,
    judge, device and dtype: the same images), so that no image is drawn twice; each None where
    not. Then what was read, for the record (None when nothing was)."""
    import json

    file = Path(path).parent / "record.json"
    try:
        record = json.loads(file.read_text())
        results, config = record["results"], record["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return None, None, None
    same = (
        meta.get("base_fingerprint") == fingerprint
        and record.get("device") == device
        and config.get("dtype") == cfg.dtype
    )
    # The record of this very delta: both carry the edit's time, to the centisecond.
    if not same or not isinstance(results, dict) or results.get("edit_seconds") != meta.get("wall_seconds"):
        return None, None, None
    original, start = evaluate.from_scores(results.get("before")), evaluate.from_scores(results.get("after"))
    if original is None and start is None:
        return None, None, None
    return original, start, {"record": str(file), "original": bool(original), "erased start": bool(start)}


def _base_check(cfg, base, data, configs, judge, target, others, seeds, run, bar, original) -> list[dict]:
    """With ``--base-check``, the same attack on the original model (nothing erased), from the
    ``original`` point already scored. The original starts at the bar, so a run stopped at
    resurgence would stop at its first point: every base run goes the whole budget."""
    from erase.relearn import Evaluator, attack

    if not cfg.base_check:
        return []
    bpipe = cfg.load(base)
    return attack(
        bpipe,
        data,
        [replace(c, stop_at_resurgence=False) for c in configs],
        Evaluator(bpipe, judge, target, others, **seeds),
        checkpoint=run.checkpoint,
        bar=bar,
        start=original,
    )


def _write(cfg, run, rec, results, relearned: dict, n_examples: int, out, device: str) -> JobResult:
    from erase.delta import save_tensors
    from erase.io import write_json
    from erase.relearn import base_check, choose_lr, format_summary, verdict
    from erase.report.plots import plot_relearning, plot_sweep

    name, runs, rows = results["concept"], results["runs"], results["summary"]
    acc0 = results["original"]["accuracy"][name]
    erased = runs[0]["curve"][0]["accuracy"][name]
    oracle = results["oracle"]
    oracle_rows = {(r["optimizer"], r["lr"]): r for r in oracle["summary"]} if oracle else None
    base_rows = (
        {(r["optimizer"], r["lr"]): r for r in results["base"]["summary"]} if results.get("base") else {}
    )
    for row in rows:
        row["verdict"] = verdict(row, oracle_rows.get((row["optimizer"], row["lr"])) if oracle else None)
        if base_rows:
            row["base_check"] = base_check(base_rows[(row["optimizer"], row["lr"])])
    # Each optimizer's best rate by the sweep rule: a later `--lrs-from` reads these.
    results["chosen"] = [
        choose_lr([r for r in rows if r["optimizer"] == o], cfg.select, keep=cfg.tau)
        for o in dict.fromkeys(r["optimizer"] for r in rows)
    ]
    results["table"] = format_summary(rows, name, acc0, erased, oracle=oracle_rows)
    print(results["table"])
    if results.get("reused_scores"):
        read = [k for k in ("original", "erased start") if results["reused_scores"][k]]
        print(f"{' and '.join(read)} read from {results['reused_scores']['record']} (the same images)")

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
        if any(
            len({r["lr"] for r in rows if r["optimizer"] == o}) > 1 for o in {r["optimizer"] for r in rows}
        ):
            plot_sweep(
                runs,
                rows,
                name,
                bar=rows[0]["threshold"],
                path=tmp / "sweep.png",
                title=f"learning-rate sweep: relearning {name!r} on {results['method']}"
                + (" (the oracle)" if (results.get("oracle") or {}).get("model") == "itself" else ""),
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

    def __call__(self, cfg, names, step: int) -> None:
        import torch

        if cfg.seed != self.first_seed:
            return
        named = dict(self.pipe.unet.named_parameters())
        tensors = {n: named[n].detach().to("cpu", torch.float32).clone() for n in names}
        info = self.info | {"config": cfg.__dict__, "seed": cfg.seed, "step": step}
        self.kept[f"relearned-{cfg.optimizer}-lr{cfg.lr:g}.safetensors"] = (tensors, info)
