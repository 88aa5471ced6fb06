"""Figures: relearning curves (the erased concept and the others, per optimizer x learning rate)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def plot_relearning(
    runs: Sequence[dict],
    concept: str,
    *,
    original: float,
    erased: float,
    tau: float,
    path: Path,
    title: str = "",
    oracle_runs: Sequence[dict] = (),
) -> None:
    """Accuracy on the erased concept (left) and mean accuracy on the others (right) against
    relearning steps: one line per optimizer x learning rate (mean over seeds, band = range over
    seeds), the original and erased levels and the resurgence threshold marked."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never open a window
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (key, rs) in enumerate(_by_setting(runs).items()):
        color = colors[i % len(colors)]
        label = f"{key[0]} lr={key[1]:g}"
        _band(ax, rs, lambda p: p["accuracy"][concept], color, label)
        _band(ax2, rs, lambda p: _mean_others(p, concept), color, label)
        if key in (o := _by_setting(oracle_runs)):
            _band(ax, o[key], lambda p: p["accuracy"][concept], color, f"{label}, oracle", dashed=True)
    ax.axhline(original, color="black", lw=1, label=f"original {original:.2f}")
    ax.axhline(erased, color="grey", lw=1, ls=":", label=f"erased {erased:.2f}")
    ax.axhline(tau * original, color="black", lw=0.8, ls="--", label=f"resurgence (tau {tau:g})")
    ax.set_title(f"{concept!r} (erased concept)")
    ax2.set_title("the other concepts (mean)")
    for a in (ax, ax2):
        a.set_xlabel("relearning step")
        a.set_ylim(-0.03, 1.03)
        a.grid(alpha=0.3)
    ax.set_ylabel("CLIP zero-shot accuracy")
    ax.legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _by_setting(runs: Sequence[dict]) -> dict[tuple[str, float], list[dict]]:
    out: dict[tuple[str, float], list[dict]] = {}
    for r in runs:
        out.setdefault((r["config"]["optimizer"], r["config"]["lr"]), []).append(r)
    return out


def _mean_others(point: dict, concept: str) -> float:
    others = [v for k, v in point["accuracy"].items() if k != concept]
    return float(np.mean(others)) if others else float("nan")


def _band(ax, runs, value, color, label, dashed=False) -> None:
    # A run that diverged stops early: pad it with NaN so the others still average.
    steps = [p["step"] for p in max((r["curve"] for r in runs), key=len)]
    ys = np.full((len(runs), len(steps)), np.nan)
    for i, r in enumerate(runs):
        ys[i, : len(r["curve"])] = [value(p) for p in r["curve"]]
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns after every run diverged
        mean, lo, hi = np.nanmean(ys, 0), np.nanmin(ys, 0), np.nanmax(ys, 0)
    # Points where nothing was scored (the others between start and end) are left out, not gaps.
    ok = np.isfinite(mean)
    steps = np.asarray(steps)[ok]
    ax.plot(steps, mean[ok], color=color, label=label, ls="--" if dashed else "-", marker=".")
    if len(runs) > 1:
        ax.fill_between(steps, lo[ok], hi[ok], color=color, alpha=0.15)


def plot_sweep(
    runs: Sequence[dict], rows: Sequence[dict], concept: str, *, bar: float, path: Path, title: str = ""
) -> None:
    """A learning-rate sweep's whole surface: one panel per optimizer with the erased concept's
    accuracy against steps for each learning rate (mean over seeds; a run that stopped at
    resurgence keeps its last value, a diverged one drops out), then two panels against the rate:
    the median steps to resurgence (open marker above the budget: not back; cross: diverged) and
    the mean peak accuracy, with the resurgence bar; when the sweep scored the other concepts, a
    third: what they kept where the runs stopped (``erase.relearn.others_kept``), with tau."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from erase.relearn import others_kept

    optimizers = list(dict.fromkeys(r["optimizer"] for r in rows))
    groups = _by_setting(runs)
    kept = any(r.get("others_final") for r in rows)  # a diverged rate may have none
    n = len(optimizers) + 2 + kept
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.2), squeeze=False)
    budget = max(r["budget"] for r in rows)
    for ax, opt in zip(axes[0], optimizers):
        lrs = sorted(r["lr"] for r in rows if r["optimizer"] == opt)
        colors = plt.cm.viridis(np.linspace(0, 0.9, len(lrs)))
        for lr, color in zip(lrs, colors):
            rs = groups[(opt, lr)]
            steps = sorted({p["step"] for r in rs for p in r["curve"]})
            mean = [np.nanmean([_held_value(r, s, concept) for r in rs]) for s in steps]
            diverged = any(r.get("diverged") for r in rs)
            label = f"{lr:g}{' (div.)' if diverged else ''}"
            ax.plot(steps, mean, color=color, ls=":" if diverged else "-", marker=".", ms=3, label=label)
        ax.axhline(bar, color="k", lw=0.8, ls="--")
        ax.set(title=opt, xlabel="step", ylim=(-0.02, 1.02), xlim=(0, budget))
        ax.legend(fontsize=6, title="lr", title_fontsize=6)
    axes[0][0].set_ylabel(f"accuracy on {concept!r}")
    steps_ax, peak_ax = axes[0][len(optimizers)], axes[0][len(optimizers) + 1]
    if kept:
        kept_ax = axes[0][-1]
        for opt in optimizers:
            own = sorted(
                (r for r in rows if r["optimizer"] == opt and r.get("others_final")), key=lambda r: r["lr"]
            )
            kept_ax.plot([r["lr"] for r in own], [others_kept(r) for r in own], "o-", ms=3, label=opt)
        kept_ax.axhline(rows[0]["tau"], color="k", lw=0.8, ls="--")
        kept_ax.set(xscale="log", xlabel="learning rate", ylabel="other concepts kept", ylim=(-0.02, 1.22))
        kept_ax.set_title("others where the runs stopped / at the start", fontsize=8)
    for opt in optimizers:
        own = sorted((r for r in rows if r["optimizer"] == opt), key=lambda r: r["lr"])
        xs = [r["lr"] for r in own]
        ys = [budget * 1.1 if r["median"] is None else r["median"] for r in own]
        (line,) = steps_ax.plot(xs, ys, "-", label=opt)
        c = line.get_color()
        peak_ax.plot(xs, [r["peak"] for r in own], "-", color=c, label=opt)
        for r, y in zip(own, ys):
            if r.get("diverged", 0) == len(r["seeds"]):
                steps_ax.plot(r["lr"], budget * 1.2, "x", color=c)
                peak_ax.plot(r["lr"], r["peak"], "x", color=c)
            else:
                fill = "none" if r["median"] is None else c
                steps_ax.plot(r["lr"], y, "o", color=c, mfc=fill)
                peak_ax.plot(r["lr"], r["peak"], "o", color=c, mfc=fill)
    steps_ax.axhline(budget, color="k", lw=0.8, ls="--")
    steps_ax.set(xscale="log", xlabel="learning rate", ylabel="median steps to resurgence")
    steps_ax.set_title(f"steps (above {budget}: not back)", fontsize=9)
    peak_ax.axhline(bar, color="k", lw=0.8, ls="--")
    peak_ax.set(xscale="log", xlabel="learning rate", ylabel="mean peak accuracy", ylim=(-0.02, 1.02))
    peak_ax.set_title("peak (filled: median back)", fontsize=9)
    steps_ax.legend(fontsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig.savefig(path, dpi=110)
    plt.close(fig)


def _held_value(run: dict, step: int, concept: str) -> float:
    """The run's accuracy at ``step``; after a stop at resurgence, the value it stopped at; after
    a divergence, nothing (NaN)."""
    points = [p for p in run["curve"] if p["step"] <= step]
    if not points or (points[-1]["step"] < step and run.get("diverged")):
        return float("nan")
    return points[-1]["accuracy"][concept]
