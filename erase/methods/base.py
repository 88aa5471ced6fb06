"""What methods share: their inputs (``EraseInputs``), config checks, batches of an image set with
the diffusion loss on them, and the ascent objective of GA, GradDiff and IEU.

What a method module must hold is in ``erase.methods.api``; the training loop is ``erase.train``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from erase.data import ImageSet
from erase.errors import EraseError
from erase.train import DivergenceGuard, FitHooks


@dataclass(frozen=True)
class EraseInputs:
    """Everything a method may read. Unused fields stay empty.

    Attributes:
        targets: prompts that show the concept to remove ("a red circle", ...).
        anchors: one prompt per target to map it onto ("a circle"): ESD's ``erase_from``, UCE's
            guide, Concept Ablation's anchor. Empty means the empty prompt.
        preserve: prompts whose outputs must not change (other colours, other shapes).
        forget / retain: image sets for data-level untraining.
    """

    targets: tuple[str, ...] = ()
    anchors: tuple[str, ...] = ()
    preserve: tuple[str, ...] = ()
    forget: ImageSet | None = None
    retain: ImageSet | None = None

    def __post_init__(self):
        if self.anchors and len(self.anchors) != len(self.targets):
            raise EraseError(f"{len(self.anchors)} anchors for {len(self.targets)} target prompts")
        overlap = set(self.targets) & set(self.preserve)
        if overlap:
            raise EraseError(f"prompt {sorted(overlap)[0]!r} is both erased and preserved")
        for a, t in zip(self.anchors, self.targets):
            if a.strip() == t.strip():
                raise EraseError(f"anchor {a!r} equals its target; an anchor must be another concept")


def require_positive(where: str, cfg, *names: str) -> None:
    """Config validation shared by the methods: each named field must be > 0."""
    for name in names:
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise EraseError(f"{where}: {name} must be a number, got {value!r}")
        if not value > 0:
            raise EraseError(f"{where}: {name} must be positive, got {value}")


def require_param_set(where: str, value: str) -> None:
    from erase.layers import PARAM_SETS

    if value not in PARAM_SETS:
        raise EraseError(f"{where}: params must be one of {', '.join(PARAM_SETS)}, got {value!r}")


@dataclass(frozen=True)
class SalunTraining:
    """The training settings of the SalUn code, shared by its baselines (GA, GradDiff, FT) and by RL
    and SalUn: Adam at lr 1e-5, 100 steps of batch 4, every UNet parameter. A method's ``Config``
    adds its own fields and calls ``check`` from its ``__post_init__``."""

    params: str = "all"
    steps: int = 100
    lr: float = 1e-5
    batch_size: int = 4
    optimizer: str = "adam"

    def check(self, name: str) -> None:
        require_param_set(name, self.params)
        require_positive(name, self, "steps", "lr", "batch_size")


class Batches:
    """Random batches of an encoded (image, prompt) set, and the shared diffusion loss on them.

    Data-level methods draw their forget and retain batches here, all from the one generator of
    the run, so a seed fixes every batch, noise and timestep.
    """

    def __init__(self, pipe, pairs: ImageSet, batch_size: int, generator: torch.Generator, what: str):
        from erase.data import encode_set

        self.enc = encode_set(pipe, pairs, what)
        self.unet, self.sched = pipe.unet, pipe.scheduler
        self.batch_size, self.gen = min(batch_size, len(self.enc)), generator

    def draw(self):
        idx = torch.randperm(len(self.enc), generator=self.gen)[: self.batch_size]
        return self.enc.latents[idx], self.enc.cond[idx], idx

    def loss(self) -> torch.Tensor:
        from erase.diffusion import diffusion_loss

        x0, cond, _ = self.draw()
        return diffusion_loss(
            self.unet, self.sched, x0, cond.embeds, generator=self.gen, added_cond_kwargs=cond.added
        )


def require_sets(name: str, inputs: EraseInputs, *, retain: bool) -> None:
    """Data-level methods need a forget set, and most a retain set too."""
    if inputs.forget is None or len(inputs.forget.images) == 0:
        raise EraseError(f"{name} needs a forget set (--forget FOLDER or a toy spec)")
    if retain and (inputs.retain is None or len(inputs.retain.images) == 0):
        raise EraseError(f"{name} needs a retain set (--retain FOLDER or a toy spec such as toy:rest:n=256)")


class AscentObjective:
    """``-L_f + retain_weight * L_r`` on fresh batches, the objective GA, GradDiff and IEU share,
    with a divergence guard that watches the forget loss and the trained weights.

    ``forget_losses`` keeps the forget loss of every step for the run's log.
    """

    def __init__(self, pipe, inputs: EraseInputs, cfg, *, seed: int, name: str, retain_weight: float):
        require_sets(name, inputs, retain=retain_weight > 0)
        from erase.layers import select_parameters

        self.gen = torch.Generator().manual_seed(seed)
        pipe.unet.eval()
        self.forget = Batches(pipe, inputs.forget, cfg.batch_size, self.gen, "forget example")
        self.retain = (
            Batches(pipe, inputs.retain, cfg.batch_size, self.gen, "retain example")
            if retain_weight > 0
            else None
        )
        self.retain_weight = retain_weight
        self.params = select_parameters(pipe.unet, cfg.params)
        self.guard = DivergenceGuard(
            self.params.values(), loss_limit=cfg.max_forget_loss, weight_factor=cfg.max_weight_growth
        )
        self.forget_losses: list[float] = []
        self.extra = {"forget_losses": self.forget_losses}  # what fit() must checkpoint with the loop

    def hooks(self, checkpoint, step_fn=None) -> FitHooks:
        """The loop's hooks: the guard, this objective's generator and lists, and the checkpoint."""
        return FitHooks(
            guard=self.guard, step_fn=step_fn, generators=(self.gen,), extra=self.extra, checkpoint=checkpoint
        )

    def __call__(self, step: int) -> torch.Tensor:
        lf = self.forget.loss()
        self.guard.watched = lf.item()
        self.forget_losses.append(self.guard.watched)
        if self.retain is None:
            return -lf
        return -lf + self.retain_weight * self.retain.loss()

    def log(self, losses: list[float]) -> dict:
        return {
            "params": sorted(self.params),
            "trainable_parameters": sum(p.numel() for p in self.params.values()),
            "losses": losses,
            "forget_losses": self.forget_losses,
        }
