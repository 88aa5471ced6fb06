"""Seed 003's worked case: descent-ascent on a ridge-regularised exponential loss does not forget.

Two orthogonal coordinates, lambda = 1, |R| = (100, 100), |F| = (30, 10), every y.x = 1, per-set
mean losses. The retrained solution (the untraining oracle) is (0.3517, 0.3517) and the original
(0.3730, 0.3296), 0.031 away; descent-ascent (retain loss minus forget loss, GradDiff at alpha = 1)
converges to (-0.3574, 0.2039), 0.724 away: about 23 times farther from the oracle than doing
nothing. With |F_1| = 80 the ascent term wins, there is no minimum, and the divergence guard of the
shared loop stops it. It runs through the same ``fit`` loop and guard as the diffusion methods.
"""

from __future__ import annotations

import math

import torch

from erase.train import Diverged, DivergenceGuard, FitHooks, FitSettings, fit

R = (100, 100)
W_DATA = (0.3730, 0.3296)  # trained on D = R + F
W_RETRAIN = (0.3517, 0.3517)  # trained on R only: the untraining oracle
W_DA = (-0.3574, 0.2039)  # where descent-ascent converges with |F| = (30, 10)


def mean_exp_loss(w: torch.Tensor, counts) -> torch.Tensor:
    """Per-set mean of exp(-y w.x) when counts[i] points sit on coordinate i with y.x = 1."""
    n = sum(counts)
    return sum(c / n * torch.exp(-w[i]) for i, c in enumerate(counts))


def descent_ascent(
    forget=(30, 10), steps: int = 3000, lr: float = 0.05, trace: list | None = None
) -> torch.Tensor:
    """Run descent on the retain loss (+ ridge) and ascent on the forget loss from the original.

    Raises ``Diverged`` (with the last good weights kept) when the ascent term has no minimum.
    ``trace``, when given, receives the weights after every step.
    """
    model = torch.nn.Module()
    model.w = torch.nn.Parameter(torch.tensor(W_DATA, dtype=torch.float64))
    guard = DivergenceGuard([model.w], loss_limit=None, weight_factor=3.0)

    def loss(step):
        if trace is not None:
            trace.append(model.w.detach().clone())
        retain = mean_exp_loss(model.w, R) + 0.5 * (model.w**2).sum()  # ridge, lambda = 1
        return retain - mean_exp_loss(model.w, forget)

    fit(
        model,
        {"w": model.w},
        loss,
        FitSettings(steps, lr, "sgd", "descent-ascent", False),
        FitHooks(guard=guard),
    )
    return model.w.detach()


def run_case(forget=(30, 10)) -> dict:
    """The numbers the seed states, measured: distances to the oracle of the original and of
    descent-ascent, their ratio, or how the guard stopped a diverging run."""
    oracle = torch.tensor(W_RETRAIN, dtype=torch.float64)
    near = math.dist(W_DATA, W_RETRAIN)
    try:
        w = descent_ascent(forget)
    except Diverged as e:
        return {"forget": list(forget), "diverged": str(e), "original_distance": round(near, 4)}
    far = torch.dist(w, oracle).item()
    return {
        "forget": list(forget),
        "descent_ascent": [round(x, 4) for x in w.tolist()],
        "original_distance": round(near, 4),
        "descent_ascent_distance": round(far, 4),
        "ratio": round(far / near, 1),
        "diverged": None,
    }
