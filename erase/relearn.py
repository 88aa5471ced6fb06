"""The relearning attack: fine-tune an edited UNet on a few examples of the erased concept and
count the steps until it comes back.

One loop for every method and optimizer (it is the experimental control): the standard diffusion
loss (``erase.diffusion.diffusion_loss``), a fixed data order and noise stream from the seed, the
gradient loop of ``erase.methods.base.fit``; only the optimizer and its learning rate differ
between runs of a comparison.

Steps to resurgence is our reconstruction of seed 002's "relearning convergence delay" (the paper's
exact definition is not available): the first evaluated step at which accuracy on the erased
concept reaches ``tau`` times the original model's. A run that never gets there within its budget
is censored and reported as "> budget", never as a number. A run stopped by a non-finite loss
before it got there is neither: it is "diverged", its own outcome, since a learning rate that blows
up says nothing about whether the erasure holds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from erase import distributed
from erase.checkpoint import Checkpointer
from erase.data import EncodedSet, ImageSet, encode_set
from erase.data import load_image_folder as _load_folder
from erase.diffusion import diffusion_loss
from erase.errors import EraseError
from erase.layers import select_parameters
from erase.optim import RELEARN_PARAMS
from erase.stats import wilson
from erase.train import OPTIMIZERS, FitHooks, FitSettings, NonFiniteLoss, fit, make_optimizer


@dataclass(frozen=True)
class RelearnConfig:
    """One relearning run. Everything but ``optimizer`` and ``lr`` is shared across a comparison.

    No field has a default here: the defaults a user gets are ``erase.jobs.relearn.RelearnJob``'s,
    which builds these (``RelearnJob.configs``)."""

    optimizer: str  # one of erase.optim.OPTIMIZERS: sgd, sgdm (momentum 0.9), adam, adamw, lion, signsgd
    lr: float
    steps: int  # the budget
    batch_size: int
    eval_every: int  # evaluate every k steps (and at step 0)
    params: str  # all, xattn, xattn-kv, non-xattn, or "changed" (the tensors the edit changed)
    seed: int  # data order and diffusion noise
    tau: float  # resurgence threshold, as a share of the original model's accuracy
    snr_gamma: float | None  # Min-SNR loss weighting; None = the plain loss
    # End the run at the first evaluation past the bar: steps to resurgence are known then, and a
    # learning-rate sweep spends its time on the runs that do not come back. The damage to the other
    # concepts is then read at that step, not at the budget.
    stop_at_resurgence: bool

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise EraseError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if not self.lr > 0:
            raise EraseError(f"learning rate must be positive, got {self.lr}")
        for name in ("steps", "batch_size", "eval_every"):
            if getattr(self, name) <= 0:
                raise EraseError(f"relearning {name} must be positive, got {getattr(self, name)}")
        if self.params not in RELEARN_PARAMS:
            raise EraseError(f"relearning params must be one of {', '.join(RELEARN_PARAMS)}")
        if self.snr_gamma is not None and not self.snr_gamma > 0:
            raise EraseError(f"snr_gamma must be positive, got {self.snr_gamma}")
        if not 0 < self.tau <= 1:
            raise EraseError(f"tau must be in (0, 1], got {self.tau}")
        make_optimizer([torch.nn.Parameter(torch.zeros(1))], self.optimizer, self.lr)  # validates


RelearnData = EncodedSet  # the relearning examples, encoded once


def encode_examples(pipe, examples: ImageSet) -> EncodedSet:
    """VAE latents and text conditioning of the relearning examples."""
    return encode_set(pipe, examples, "relearning example")


def generated_examples(
    pipe, prompts: Sequence[str], n: int, *, seed: int = 0, steps: int = 25, guidance: float = 7.5
) -> ImageSet:
    """``n`` examples drawn by ``pipe`` (the original model), cycling through ``prompts``."""
    from erase.generate import generate

    if n <= 0:
        raise EraseError(f"the number of relearning examples must be positive, got {n}")
    chosen = [prompts[i % len(prompts)] for i in range(n)]
    # Seeds far from the image seeds of tuning and evaluation (1000-2999, erase.seeds), so that no
    # evaluated image was trained on.
    images = [
        generate(pipe, [p], [50_000 + seed * 1_000 + i], steps=steps, guidance=guidance, progress=False)[0]
        for i, p in enumerate(chosen)
    ]
    return ImageSet(tuple(images), tuple(chosen))


def load_image_folder(folder: str | Path) -> ImageSet:
    """Relearning examples from a folder of images with captions (see ``erase.data``)."""
    return _load_folder(folder, "relearning")


def relearn_parameters(unet: torch.nn.Module, which: str, changed: Sequence[str] = ()) -> dict:
    """The parameters a relearning run trains: a named set, or the tensors the edit changed."""
    if which != "changed":
        return select_parameters(unet, which)
    if not changed:
        raise EraseError("relearning params 'changed' needs the edit's tensor names (a delta)")
    named = dict(unet.named_parameters())
    return {k: named[k] for k in changed}


def relearn(
    pipe,
    data: RelearnData,
    cfg: RelearnConfig,
    evaluate: Callable[..., dict],
    *,
    changed: Sequence[str] = (),
    progress: bool = True,
    start: dict | None = None,
    checkpoint: Checkpointer | None = None,
    bar: tuple[str, float] | None = None,
) -> dict:
    """Fine-tune ``pipe.unet`` in place on ``data``; ``evaluate(final=...)`` (a point: accuracy per
    concept) runs at step 0 and every ``cfg.eval_every`` steps; ``final`` is true for the run's last
    point, where an evaluator that skips the other concepts along the way scores them. ``start`` is the step-0 point when the caller
    already has it (every run of a comparison starts from the same weights). Returns the curve and
    the losses. ``checkpoint`` makes the run resumable, its curve included. ``bar`` (concept,
    accuracy) is resurgence, where ``cfg.stop_at_resurgence`` ends the run."""
    unet, sched = pipe.unet, pipe.scheduler
    params = relearn_parameters(unet, cfg.params, changed)
    trainable = sum(p.numel() for p in params.values())
    gen = torch.Generator().manual_seed(cfg.seed)
    # A fixed data order: one permutation per pass through the examples, from the seed.
    order: list[int] = []
    while len(order) < cfg.steps * cfg.batch_size:
        order += torch.randperm(len(data), generator=gen).tolist()

    curve = [{"step": 0, **(start if start is not None else evaluate(final=True))}]

    def loss_fn(step: int) -> torch.Tensor:
        unet.train()
        idx = torch.tensor(order[step * cfg.batch_size : (step + 1) * cfg.batch_size])
        cond = data.cond[idx]
        return diffusion_loss(
            unet,
            sched,
            data.latents[idx],
            cond.embeds,
            generator=gen,
            added_cond_kwargs=cond.added,
            snr_gamma=cfg.snr_gamma,
        )

    def after_step(step: int) -> bool:
        last = step + 1 == cfg.steps
        if (step + 1) % cfg.eval_every == 0 or last:
            unet.eval()
            with torch.no_grad():
                curve.append({"step": step + 1, **evaluate(final=last)})
                stop = cfg.stop_at_resurgence and bar is not None and _accuracy(curve[-1], bar[0]) >= bar[1]
                if stop and not last and hasattr(evaluate, "others"):
                    # The last point after all: an evaluator that scored the target alone along the
                    # way adds the other concepts to it (the target's numbers stay as they stopped it).
                    for key, values in evaluate.others().items():
                        curve[-1].setdefault(key, {}).update(values)
            return stop
        return False

    try:
        losses = fit(
            unet,
            params,
            loss_fn,
            FitSettings(cfg.steps, cfg.lr, cfg.optimizer, f"relearn {cfg.optimizer} lr={cfg.lr:g}", progress),
            FitHooks(after_step=after_step, generators=(gen,), extra={"curve": curve}, checkpoint=checkpoint),
        )
    except NonFiniteLoss as e:
        # A learning rate that blows up is a result of the sweep, not a crash: the run is
        # censored from there on and the table says it diverged.
        return {"curve": curve, "losses": None, "diverged": str(e), "trainable_parameters": trainable}
    return {"curve": curve, "losses": losses, "diverged": None, "trainable_parameters": trainable}


class Evaluator:
    """Accuracy of the erased concept and its neighbours, on held-out prompts and seeds, as the
    judge (``erase.judges``) reads them.

    The erased concept gets many images per point (``seeds`` x its held-out prompts; 24 were too
    noisy to read a curve from, so aim for 64 or more); the others, whose damage is a side result,
    get ``other_seeds``. Each call returns one curve point: accuracy, its 95% bootstrap interval and
    the image count, per concept.
    """

    def __init__(
        self,
        pipe,
        judge,
        target,
        others=(),
        *,
        seeds,
        other_seeds=None,
        steps=10,
        guidance=7.5,
        others_at: str = "every",
    ):
        if others_at not in ("every", "end"):
            raise EraseError(f"others_at must be 'every' or 'end', got {others_at!r}")
        self.pipe, self.judge, self.steps, self.guidance = pipe, judge, steps, guidance
        self.plan = [(target, list(seeds))] + [(c, list(other_seeds or seeds)) for c in others]
        self.others_at = others_at

    @property
    def images_per_point(self) -> dict[str, int]:
        return {c.name: len(c.heldout) * len(s) for c, s in self.plan}

    def __call__(self, final: bool = True) -> dict:
        # With others_at "end", the points between the start and the last score the target alone.
        return self._score(self.plan if final or self.others_at == "every" else self.plan[:1])

    def others(self) -> dict:
        """The other concepts alone, for a run that stopped early with ``others_at`` "end" (with
        "every" they are in every point already)."""
        return self._score(self.plan[1:]) if self.others_at == "end" else {}

    def from_scores(self, scores: dict | None) -> dict | None:
        """The full point this evaluator would draw, read instead from ``erase.score.score_concepts``'
        result for the same model (an edit's before or after, in its record), or None unless that
        result covers it: each concept with its per-image verdicts, the same held-out prompts, a
        superset of the seeds, the same sampling steps, guidance and judge. The images are the
        same ones (each seeded on its own), so the point is the one drawing them again would give."""
        if not scores:
            return None
        s = scores.get("settings", {})
        same = {"steps": self.steps, "guidance": self.guidance, "judge": self.judge.spec}
        same["neutral"] = self.judge.none
        if any(s.get(k) != v for k, v in same.items()):
            return None
        col = {seed: i for i, seed in enumerate(s.get("seeds", []))}  # per_image is prompt-major
        point: dict = {"accuracy": {}, "ci95": {}, "hits": {}, "n": {}}
        for concept, seeds in self.plan:
            res = scores["concepts"].get(concept.name) or {}
            if (
                "per_image" not in res
                or res.get("prompts") != list(concept.heldout)
                or not set(seeds) <= set(col)
            ):
                return None
            per = res["per_image"]
            hits = sum(per[p * len(col) + col[seed]] for p in range(len(concept.heldout)) for seed in seeds)
            n = len(concept.heldout) * len(seeds)
            point["accuracy"][concept.name] = hits / n
            point["ci95"][concept.name] = list(wilson(hits, n))
            point["hits"][concept.name] = hits
            point["n"][concept.name] = n
        return point

    @torch.no_grad()
    def _score(self, plan) -> dict:
        from erase.generate import generate
        from erase.score import classify_concept

        point: dict = {"accuracy": {}, "ci95": {}, "hits": {}, "n": {}}
        for concept, seeds in plan:
            prompts = list(concept.heldout)
            images = generate(
                self.pipe,
                prompts,
                seeds,
                steps=self.steps,
                guidance=self.guidance,
                progress=False,
                split=True,
            )
            res = classify_concept(self.judge, concept, images, [p for p in prompts for _ in seeds])
            point["accuracy"][concept.name] = res["accuracy"]
            point["ci95"][concept.name] = res["ci95"]
            point["hits"][concept.name] = res["hits"]
            point["n"][concept.name] = res["n"]
        return point


def attack(
    pipe,
    data: RelearnData,
    configs: Sequence[RelearnConfig],
    evaluate: Callable[..., dict],
    *,
    changed: Sequence[str] = (),
    progress: bool = True,
    on_done: Callable[[RelearnConfig, list[str], int], None] | None = None,
    checkpoint: Checkpointer | None = None,
    bar: tuple[str, float] | None = None,
    start: dict | None = None,
) -> list[dict]:
    """Run every config from the UNet's current weights, restoring them between runs; with
    ``checkpoint``, a resumed attack replays its finished runs and goes on with the unfinished one.

    Only the trained tensors are copied (every config of one comparison trains the same set), so an
    attack on Stable Diffusion's cross-attention does not hold a second UNet. The starting point is
    evaluated once and shared by every run (or given: ``start``, read from a record of the same
    weights, ``Evaluator.from_scores``). ``on_done(cfg, names, step)`` is called with the relearned
    weights still in place (e.g. to save them for an audit); ``names`` are the tensors that differ
    from the base model: the trained ones and the erasure's.

    Under ``accelerate launch`` the start is evaluated by all processes together, then each process
    runs its own contiguous share of ``configs`` (``on_done`` and ``checkpoint`` see only that
    share) and every process returns all the runs, in config order.
    """
    sets = {c.params for c in configs}
    if len(sets) != 1:
        raise EraseError("every run of one comparison must train the same parameters; got " + ", ".join(sets))
    params = relearn_parameters(pipe.unet, sets.pop(), changed)
    saved = {k: p.detach().clone() for k, p in params.items()}
    pipe.unet.eval()
    if start is None:
        start = evaluate(final=True)
    runs = []

    def evaluate_alone(final: bool = True) -> dict:
        with distributed.alone():  # every process is busy with its own configs
            return evaluate(final=final)

    if hasattr(evaluate, "others"):

        def others_alone() -> dict:
            with distributed.alone():
                return evaluate.others()

        evaluate_alone.others = others_alone

    try:
        for cfg in distributed.share(configs):  # all of them, unless launched as several processes
            out = relearn(
                pipe,
                data,
                cfg,
                evaluate_alone,
                changed=changed,
                progress=progress,
                start=start,
                checkpoint=checkpoint,
                bar=bar,
            )
            runs.append({"config": asdict(cfg), **out})
            if on_done is not None:
                # The step the weights are from: the budget, or where the run stopped or diverged.
                on_done(cfg, list(dict.fromkeys([*changed, *params])), out["curve"][-1]["step"])
            with torch.no_grad():
                for k, p in params.items():
                    p.copy_(saved[k])
    finally:
        with torch.no_grad():  # leave the caller's model as it was, even after an error
            for k, p in params.items():
                p.copy_(saved[k])
    return distributed.gather(runs)


def steps_to_resurgence(curve: Sequence[dict], concept: str, original: float, tau: float) -> int | None:
    """First evaluated step with accuracy >= tau * original; None when censored (never reached)."""
    bar = tau * original
    for point in curve:
        if _accuracy(point, concept) >= bar:
            return int(point["step"])
    return None


def _accuracy(point: dict, concept: str) -> float:
    return point["accuracy"][concept] if "accuracy" in point else point[concept]


def censored_median(values: Sequence[int | None]) -> float | None:
    """Median where None means "more than the budget" (larger than any number): None when at
    least half of the runs are censored, since the median itself is then unknown."""
    ranked = sorted(values, key=lambda v: (v is None, v or 0))
    n = len(ranked)
    lo, hi = ranked[(n - 1) // 2], ranked[n // 2]
    if lo is None or hi is None:
        return None
    return (lo + hi) / 2


def format_resurgence(steps: float | None, budget: int) -> str:
    if steps is None:
        return f"> {budget}"
    return f"{steps:g}"


def summarize(runs: Sequence[dict], concept: str, original: float) -> list[dict]:
    """One row per (optimizer, learning rate): steps to resurgence per seed, their censored median
    and range over seeds, and what the other concepts looked like at the end."""
    groups: dict[tuple[str, float], list[dict]] = {}
    for r in runs:
        groups.setdefault((r["config"]["optimizer"], r["config"]["lr"]), []).append(r)
    rows = []
    for (opt, lr), rs in groups.items():
        tau, budget = rs[0]["config"]["tau"], rs[0]["config"]["steps"]
        per_seed = [_outcome(r, concept, original, tau) for r in rs]
        ran = [s for s in per_seed if s != "diverged"]  # runs that came back or held to the end
        finite = [s for s in ran if s is not None]
        # Each run's last point; a run that diverged between points may lack the other concepts
        # (scored only at the end), so each one is averaged over the runs that have it.
        lasts = [r["curve"][-1]["accuracy"] for r in rs]
        others = [k for k in dict.fromkeys(k for a in lasts for k in a) if k != concept]
        rows.append(
            {
                "optimizer": opt,
                "lr": lr,
                "seeds": [r["config"]["seed"] for r in rs],
                "budget": budget,
                "tau": tau,
                "threshold": tau * original,
                "steps_per_seed": per_seed,
                "median": censored_median(ran) if ran else None,
                "range": [min(finite), max(finite) if len(finite) == len(ran) else None] if finite else None,
                "censored": sum(s is None for s in ran),
                "diverged": per_seed.count("diverged"),
                # Runs whose loss blew up at any point, after a resurgence too (what a base check asks).
                "blew_up": sum(bool(r.get("diverged")) for r in rs),
                "peak": float(np.mean([max(p["accuracy"][concept] for p in r["curve"]) for r in rs])),
                # Pooled over seeds, each run at its best point (so a peak is never shown without n).
                "peak_count": _count(
                    [max(r["curve"], key=lambda p: p["accuracy"][concept]) for r in rs], concept
                ),
                "final": float(np.mean([r["curve"][-1]["accuracy"][concept] for r in rs])),
                # The same as a count over seeds (images that show the concept at each run's end).
                "final_count": _count([r["curve"][-1] for r in rs], concept),
                "others_final": {k: float(np.mean([a[k] for a in lasts if k in a])) for k in others},
                # Where every run started (one shared point): what the erasure left, before the attack.
                "start": rs[0]["curve"][0]["accuracy"][concept],
                "start_count": _count(rs[0]["curve"][:1], concept),
                "others_start": {k: v for k, v in rs[0]["curve"][0]["accuracy"].items() if k != concept},
            }
        )
    return rows


def _count(points: Sequence[dict], concept: str) -> list[int] | None:
    if not all("hits" in p and concept in p["hits"] for p in points):
        return None  # a curve recorded before points carried counts
    return [sum(p["hits"][concept] for p in points), sum(p["n"][concept] for p in points)]


def _outcome(run: dict, concept: str, original: float, tau: float) -> int | str | None:
    """Steps to resurgence; None when the run held to the end of its budget; "diverged" when a
    non-finite loss stopped it before the concept came back."""
    steps = steps_to_resurgence(run["curve"], concept, original, tau)
    return "diverged" if steps is None and run.get("diverged") else steps


def row_resurgence(row: dict) -> str:
    """A summary row's headline: the median steps, "> budget" when the runs held, or "diverged"
    when every run blew up (never shown as "> budget")."""
    if row.get("diverged") and row["diverged"] == len(row["seeds"]):
        return "diverged"
    return format_resurgence(row["median"], row["budget"])


def format_final(row: dict) -> str:
    """The concept at the end of the runs: ``0.50 (12/24)``, images over all seeds."""
    kn = row.get("final_count")
    return f"{row['final']:.2f}" + (f" ({kn[0]}/{kn[1]})" if kn else "")


def format_range(row: dict) -> str:
    if row.get("diverged"):
        return f"{row['diverged']}/{len(row['seeds'])} diverged"
    if row["range"] is None:
        return "none came back"
    lo, hi = row["range"]
    return f"{lo}-{hi}" if hi is not None else f"{lo} to > {row['budget']}"


def format_summary(rows: Sequence[dict], concept: str, original: float, erased: float, oracle=None) -> str:
    """The terminal table of one relearning comparison."""
    head = (
        f"relearning {concept!r}: original {original:.2f}, erased {erased:.2f}, "
        f"resurgence at >= {rows[0]['threshold']:.2f} (tau {rows[0]['tau']:g})"
    )
    cols = f"{'optimizer':<9} {'lr':>8} {'steps to resurgence':>20} {'range over seeds':>17} {'peak':>5} {'final':>14}"
    cols += "  oracle steps  verdict" if oracle is not None else "  verdict"
    lines = [head, cols]
    for row in rows:
        line = (
            f"{row['optimizer']:<9} {row['lr']:>8.2g} {row_resurgence(row):>20} "
            f"{format_range(row):>17} {row['peak']:>5.2f} {format_final(row):>14}"
        )
        o = oracle.get((row["optimizer"], row["lr"])) if oracle is not None else None
        if oracle is not None:
            line += f"  {row_resurgence(o) if o else 'n/a':>12}"
        lines.append(f"{line}  {verdict(row, o)['text']}")
        if row["others_final"]:
            others = ", ".join(f"{k} {v:.2f}" for k, v in row["others_final"].items())
            lines.append(f"{'':<9} {'':>8} other concepts at the end: {others}")
        if row.get("base_check"):
            b = row["base_check"]
            others = "".join(f", {k} {v:.2f}" for k, v in b["others_final"].items())
            lines.append(f"{'':<9} {'':>8} base check: the attack {b['text']}{others}")
    lines.append(
        f"median over {len(rows[0]['seeds'])} relearning seeds; '> N': not back within the budget; "
        "'diverged': the loss blew up first (not evidence that the erasure held)"
    )
    if oracle is None:
        lines.append(
            "uncalibrated: no oracle was attacked, so '> N' may only mean the attack is too weak; "
            "pass --oracle (a model that never learned the concept)"
        )
    return "\n".join(lines)


VERDICTS = ("came back", "held", "too weak to judge", "diverged", "uncalibrated")


def verdict(row: dict, oracle_row: dict | None) -> dict:
    """What one optimizer x learning rate says about the erasure, judged against the same attack on
    the unlearning oracle (a model that never learned the concept).

    - ``came back``: the erased model reached resurgence (with its steps over the oracle's, when
      the oracle came back too: near 1, as deep as never having learned; far below, only hidden);
    - ``held``: it did not, and the oracle did within the same budget, so the attack was strong
      enough to tell;
    - ``too weak to judge``: neither came back (or the oracle's runs diverged): '> budget' would
      say nothing about the erasure;
    - ``diverged``: every run of the erased model blew up first;
    - ``uncalibrated``: it did not come back and no oracle was attacked.
    """
    budget = row["budget"]
    if row_resurgence(row) == "diverged":
        return {"outcome": "diverged", "text": "diverged: the loss blew up before any resurgence"}
    if row["median"] == 0:  # nothing to attack: a ratio to the oracle would read as "faster"
        return {"outcome": "came back", "text": "not erased: at the bar before the attack's first step"}
    if row["median"] is not None:
        text = f"came back in {row['median']:g} steps"
        if oracle_row is not None and oracle_row["median"]:
            text += f", {row['median'] / oracle_row['median']:.2f}x the oracle's {oracle_row['median']:g}"
        elif oracle_row is not None and oracle_row["median"] == 0:
            text += "; the oracle was at the bar before any step"
        return {"outcome": "came back", "text": text}
    if oracle_row is None:
        return {"outcome": "uncalibrated", "text": f"uncalibrated: > {budget} steps, no oracle to compare"}
    if row_resurgence(oracle_row) == "diverged":
        return {"outcome": "too weak to judge", "text": "too weak to judge: the oracle's runs diverged"}
    if oracle_row["median"] is None:
        return {
            "outcome": "too weak to judge",
            "text": f"too weak to judge: the oracle did not come back within {budget} steps either",
        }
    return {
        "outcome": "held",
        "text": f"held: > {budget} steps, while the oracle came back in {oracle_row['median']:g}",
    }


def base_check(base_row: dict) -> dict:
    """The same attack on the original model, where nothing was erased: whether it keeps the concept
    (every run ends at or above the bar, none diverged), and what it does to the other concepts by
    itself, the reference for the damage an attack on an erasure does to them. An attack that
    loses the concept on the original teaches something other than the concept at that rate."""
    diverged = base_row.get("blew_up", base_row.get("diverged", 0))
    kept = not diverged and base_row["final"] >= base_row["threshold"]
    final = format_final(base_row)
    if diverged:
        text = f"diverged on the original ({diverged}/{len(base_row['seeds'])} runs)"
    elif kept:
        text = f"keeps the concept on the original (final {final})"
    else:
        text = f"loses the concept on the original (final {final}, bar {base_row['threshold']:.2f})"
    return {
        "kept": kept,
        "final": base_row["final"],
        "final_count": base_row.get("final_count"),
        "diverged": diverged,
        "others_final": base_row["others_final"],
        "text": text,
    }


SELECTION_RULES = ("fastest", "selective")


def others_kept(row: dict) -> float | None:
    """The other concepts' mean accuracy at the runs' last points over their mean at the start
    (1.0: untouched); None when the row tracked no other concept. With ``stop_at_resurgence`` the
    last point is where the concept came back: what bringing it back cost the others."""
    shared = [k for k in row["others_final"] if k in row.get("others_start", {})]
    start = sum(row["others_start"][k] for k in shared)
    return sum(row["others_final"][k] for k in shared) / start if start else None


def choose_lr(rows: Sequence[dict], rule: str = "fastest", keep: float = 0.8) -> dict:
    """The learning-rate selection rule, fixed before any sweep ran, over one optimizer's rows (its
    learning rates, each over several seeds, on the model swept: the unlearning oracle, on tuning
    seeds).

    ``fastest``: the fewest median steps to resurgence; ties go to the rate where more seeds came
    back, then the higher mean peak accuracy, then the smaller rate. A rate where any run diverged
    is never chosen while another had none; when none came back, the highest mean peak wins and the
    row is marked ``came_back: False`` (the sweep was too narrow or the budget too small).

    ``selective``: the same, among the rates that came back while the other concepts kept at least
    ``keep`` of their accuracy (``others_kept``, read where each run stopped: an attack that teaches
    the concept, not one that teaches the model to draw nothing else). When no rate that came back
    kept them, the one that kept the most is chosen and marked ``selective: False``; when none came
    back, as ``fastest``."""
    if rule not in SELECTION_RULES:
        raise EraseError(f"unknown selection rule {rule!r}; choose from {', '.join(SELECTION_RULES)}")

    def key(row: dict):
        diverged = row.get("diverged", 0)
        back = len(row["seeds"]) - row["censored"] - diverged
        median = row["median"] if row["median"] is not None else float("inf")
        return (diverged > 0, median, -back, -row["peak"], row["lr"])

    best, extra = min(rows, key=key), {}
    if rule == "selective":
        back = [r for r in rows if r["median"] is not None and not r.get("diverged")]
        # A run that diverged between points never reached the last one, where the others are read.
        if any(others_kept(r) is None for r in back):
            raise EraseError(
                "the selective rule needs the other concepts scored where the runs stopped (others)"
            )
        kept = [r for r in back if others_kept(r) >= keep]
        if kept:
            best = min(kept, key=key)
        elif back:  # none selective: the least damage, then the fastest
            best = min(back, key=lambda r: (-others_kept(r), *key(r)))
        extra = {"selective": bool(kept), "keep": keep, "others_kept": others_kept(best)}
    return best | {"came_back": best["median"] is not None, "rule": rule} | extra
