"""Gradient ascent (GA) on the forget set, and GradDiff (ascent on the forget set plus descent on
the retain set): the baselines of data-level untraining [source: the SalUn code].

``L = -L_mse(theta; D_f) + alpha * L_mse(theta; D_r)``; ``alpha = 0`` is pure ascent (``ga``),
``alpha > 0`` is descent-ascent (``graddiff``). Ascent has no minimum (seed 003): the divergence
guard stops the run when the forget loss passes ``max_forget_loss`` or the trained weights' norm
grows past ``max_weight_growth``, keeping the last good weights.
"""

from __future__ import annotations

from dataclasses import dataclass

from erase.checkpoint import Checkpointer
from erase.methods.base import (
    AscentObjective,
    EraseInputs,
    fit,
    require_param_set,
    require_positive,
)

KIND = "untraining"


@dataclass(frozen=True)
class Config:
    """GA / GradDiff settings (SalUn code: Adam, lr 1e-5, alpha 0.1 for GradDiff)."""

    params: str = "all"
    steps: int = 100
    lr: float = 1e-5
    batch_size: int = 4
    alpha: float = 0.0  # retain weight; 0 = pure gradient ascent
    optimizer: str = "adam"
    max_forget_loss: float = 1.0  # divergence guard: a UNet that predicts zeros scores 1.0
    max_weight_growth: float = 1.5  # divergence guard on the trained weights' norm

    def __post_init__(self):
        require_param_set("ga", self.params)
        require_positive("ga", self, "steps", "lr", "batch_size", "max_forget_loss", "max_weight_growth")
        if self.alpha < 0:
            from erase.errors import EraseError

            raise EraseError(f"ga: alpha must be >= 0, got {self.alpha}")


TOY = {"lr": 1e-4, "steps": 20}  # at 60 steps ascent crossed the guard (forget loss 1.38 at step 23)


def edit(
    pipe,
    inputs: EraseInputs,
    cfg: Config,
    *,
    seed: int,
    progress: bool = True,
    checkpoint: Checkpointer | None = None,
) -> dict:
    name = "graddiff" if cfg.alpha > 0 else "ga"
    objective = AscentObjective(pipe, inputs, cfg, seed=seed, name=name, retain_weight=cfg.alpha)
    losses = fit(
        pipe.unet,
        objective.params,
        objective,
        steps=cfg.steps,
        lr=cfg.lr,
        optimizer=cfg.optimizer,
        desc=name,
        progress=progress,
        guard=objective.guard,
        generators=(objective.gen,),
        extra=objective.extra,
        checkpoint=checkpoint,
    )
    return objective.log(losses)
