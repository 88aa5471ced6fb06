"""What every method receives and returns, and the one fine-tuning loop the gradient methods share.

A method is a module with ``KIND`` (``"unlearning"`` or ``"untraining"``), a frozen ``Config``
dataclass and ``edit(pipe, inputs, cfg, *, seed, progress) -> dict``, which edits ``pipe.unet`` in
place and returns a log with at least ``"params"``: the names of the parameters it may have changed.
Concept-level and data-level methods share this signature and differ only in which fields of
``EraseInputs`` they read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from tqdm.auto import tqdm

from erase.errors import EraseError

Kind = Literal["unlearning", "untraining"]


@dataclass(frozen=True)
class ImageSet:
    """(image, prompt) pairs: a forget or retain set for data-level methods."""

    images: tuple  # PIL images
    prompts: tuple[str, ...]
    ids: tuple[int, ...] | None = None  # training-sample ids, when known (toy world)

    def __post_init__(self):
        if len(self.images) != len(self.prompts):
            raise EraseError(f"an image set has {len(self.images)} images but {len(self.prompts)} captions")


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
        if not value > 0:
            raise EraseError(f"{where}: {name} must be positive, got {value}")


def require_param_set(where: str, value: str) -> None:
    from erase.layers import PARAM_SETS

    if value not in PARAM_SETS:
        raise EraseError(f"{where}: params must be one of {', '.join(PARAM_SETS)}, got {value!r}")


class NonFiniteLoss(EraseError):
    """Raised after the loop has put the last good weights back."""


def make_optimizer(params: list[torch.nn.Parameter], name: str, lr: float) -> torch.optim.Optimizer:
    if not lr > 0:
        raise EraseError(f"learning rate must be positive, got {lr}")
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if name == "sgdm":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    raise EraseError(f"unknown optimizer {name!r}; choose adam, adamw, sgd or sgdm")


def fit(
    module: torch.nn.Module,
    params: dict[str, torch.nn.Parameter],
    loss_fn: Callable[[int], torch.Tensor],
    *,
    steps: int,
    lr: float,
    optimizer: str = "adam",
    desc: str = "erase",
    progress: bool = True,
    grad_hook: Callable[[], None] | None = None,
    after_step: Callable[[int], None] | None = None,
) -> list[float]:
    """Gradient steps on ``params`` (of ``module``) with ``loss_fn(step)``; returns the loss per step.

    Only ``params`` are trainable during the loop; afterwards ``module`` is left frozen and in
    eval mode, whatever happened.

    A non-finite loss or gradient stops the loop *before* the step that would corrupt the
    weights, so the UNet keeps the last good weights, and ``NonFiniteLoss`` says so.
    ``grad_hook`` runs between backward and step (SalUn's saliency mask, for instance);
    ``after_step(step)`` after each step (the relearning attack evaluates there).
    """
    if steps <= 0:
        raise EraseError(f"steps must be positive, got {steps}")
    plist = list(params.values())
    opt = make_optimizer(plist, optimizer, lr)
    losses: list[float] = []
    module.requires_grad_(False)
    for p in plist:
        p.requires_grad_(True)
    module.train()
    try:
        _loop(opt, plist, loss_fn, steps, desc, progress, grad_hook, after_step, losses)
    finally:
        module.eval().requires_grad_(False)
    return losses


def _loop(opt, plist, loss_fn, steps, desc, progress, grad_hook, after_step, losses) -> None:
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False)
    for step in bar:
        loss = loss_fn(step)
        if not torch.isfinite(loss):
            raise NonFiniteLoss(
                f"{desc}: loss became {loss.item()} at step {step}; stopped and kept the weights "
                f"of step {step - 1}; lower the learning rate"
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_hook is not None:
            grad_hook()
        if not all(torch.isfinite(p.grad).all() for p in plist if p.grad is not None):
            opt.zero_grad(set_to_none=True)
            raise NonFiniteLoss(
                f"{desc}: gradient became non-finite at step {step}; stopped and kept the weights "
                f"of step {step - 1}; lower the learning rate"
            )
        opt.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if after_step is not None:
            after_step(step)
