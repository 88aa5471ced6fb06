"""Gradient ascent (GA) on the forget set, and GradDiff (ascent on the forget set plus descent on
the retain set): the baselines of data-level untraining [source: the SalUn code].

``L = -L_mse(theta; D_f) + alpha * L_mse(theta; D_r)``; ``alpha = 0`` is pure ascent (``ga``),
``alpha > 0`` is descent-ascent (``graddiff``). Ascent has no minimum (seed 003): the divergence
guard stops the run when the forget loss passes ``max_forget_loss`` or the trained weights' norm
grows past ``max_weight_growth``, keeping the last good weights.
"""

from __future__ import annotations

from dataclasses import dataclass

from erase.errors import EraseError
from erase.methods.base import AscentObjective, EraseInputs, SalunTraining, require_positive
from erase.train import FitSettings, fit

KIND = "untraining"


@dataclass(frozen=True)
class Config(SalunTraining):
    """GA / GradDiff settings: the SalUn code's (``SalunTraining``), alpha 0.1 for GradDiff."""

    alpha: float = 0.0  # retain weight; 0 = pure gradient ascent
    max_forget_loss: float = 1.0  # divergence guard: a UNet that predicts zeros scores 1.0
    max_weight_growth: float = 1.5  # divergence guard on the trained weights' norm

    def __post_init__(self):
        self.check("ga")
        require_positive("ga", self, "max_forget_loss", "max_weight_growth")
        if self.alpha < 0:
            raise EraseError(f"ga: alpha must be >= 0, got {self.alpha}")


TOY = {"lr": 1e-4, "steps": 20}  # at 60 steps ascent crossed the guard (forget loss 1.38 at step 23)
# The test matrix's settings: random weights start above a trained model's forget-loss limit (1.0).
SMOKE = {"steps": 2, "lr": 1e-3, "max_forget_loss": 100.0}


def edit(pipe, inputs: EraseInputs, cfg: Config, *, seed: int, progress=True, checkpoint=None) -> dict:
    """See ``erase.methods.api.MethodModule``."""
    name = "graddiff" if cfg.alpha > 0 else "ga"
    objective = AscentObjective(pipe, inputs, cfg, seed=seed, name=name, retain_weight=cfg.alpha)
    losses = fit(
        pipe.unet,
        objective.params,
        objective,
        FitSettings.of(cfg, name, progress),
        objective.hooks(checkpoint),
    )
    return objective.log(losses)
