"""The one training loop (``fit``) that every gradient method and the relearning attack share, with
what it needs: optimizers, in-backward stepping, the non-finite check and the divergence guard.

It is an experimental control: two methods or two optimizers compared here differ only in their
loss or their update, never in how the loop batches, checks, checkpoints or stops.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from erase.checkpoint import Checkpointer, LoopState, loop_tag
from erase.errors import EraseError
from erase.optim import OPTIMIZERS


class NonFiniteLoss(EraseError):
    """Raised after the loop has put the last good weights back."""


class Diverged(NonFiniteLoss):
    """A divergence guard stopped the loop before the step that would have crossed its limit."""


class DivergenceGuard:
    """Stops ascent-type methods before they wreck the model.

    Gradient ascent has no minimum: left alone it drives the forget loss, and the weights, to
    infinity (seed 003). The guard is checked before each step, on the loss the method watches
    (the forget loss) and on the norm of the trained weights; crossing either limit stops the loop
    with the previous step's weights in place and a message saying which limit and when.

    ``loss_limit`` 1.0 suits noise prediction: a UNet that predicts zeros scores 1.0 on unit
    noise, so a forget loss above that means it no longer denoises at all.
    """

    def __init__(self, params, *, loss_limit: float | None = 1.0, weight_factor: float = 1.5):
        self.params = list(params)
        self.loss_limit, self.weight_factor = loss_limit, weight_factor
        self.start = self._norm()
        self.watched: float | None = None  # set by the method's loss function each step

    def _norm(self) -> float:
        with torch.no_grad():
            return float(torch.sqrt(sum((p.float() ** 2).sum() for p in self.params)))

    def __call__(self, step: int) -> str | None:
        if self.loss_limit is not None and self.watched is not None and self.watched > self.loss_limit:
            return (
                f"the forget loss reached {self.watched:.3g} at step {step}, past the limit "
                f"{self.loss_limit:g} (the model no longer denoises)"
            )
        norm = self._norm()
        if self.start > 0 and norm > self.weight_factor * self.start:
            return (
                f"the trained weights' norm grew {norm / self.start:.2f}x by step {step}, "
                f"past the limit {self.weight_factor:g}x"
            )
        return None


def make_optimizer(
    params: list[torch.nn.Parameter], name: str, lr: float, *, foreach: bool | None = None
) -> torch.optim.Optimizer:
    """``foreach=False`` steps one tensor at a time: slower on a GPU, but without the multi-tensor
    path's temporaries (a full copy of the optimizer state's size in Adam's step)."""
    if not lr > 0:
        raise EraseError(f"learning rate must be positive, got {lr}")
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, foreach=foreach)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, foreach=foreach)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, foreach=foreach)
    if name == "sgdm":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, foreach=foreach)
    if name == "lion":
        return Lion(params, lr=lr)
    if name == "signsgd":
        return Lion(params, lr=lr, betas=(0.0, 0.0))  # the step is the gradient's sign
    raise EraseError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


class Lion(torch.optim.Optimizer):
    """Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"), which torch lacks:
    each coordinate moves by exactly ``lr`` in the sign of an interpolation of the gradient and a
    momentum, so the step size does not scale with the gradient. With ``betas=(0, 0)`` it is signSGD.

    ``c = sign(b1 m + (1 - b1) g)``; ``w -= lr (c + wd w)``; then ``m = b2 m + (1 - b2) g``.
    Written from the paper's Algorithm 2; each tensor is updated from its own gradient and state,
    so it steps inside the backward pass like the others (``StepInBackward``).
    """

    def __init__(
        self, params, lr: float, betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0
    ):
        if not lr > 0:
            raise EraseError(f"learning rate must be positive, got {lr}")
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if group["weight_decay"]:
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                if b1 == 0 and b2 == 0:  # signSGD: no momentum to keep (nor to checkpoint)
                    p.add_(torch.sign(p.grad), alpha=-group["lr"])
                    continue
                m = self.state[p].setdefault("exp_avg", torch.zeros_like(p))
                p.add_(torch.sign(m * b1 + p.grad * (1 - b1)), alpha=-group["lr"])
                m.mul_(b2).add_(p.grad, alpha=1 - b2)
        return None


@dataclass(frozen=True)
class FitSettings:
    """How one loop trains; everything else it needs comes through ``FitHooks``."""

    steps: int
    lr: float
    optimizer: str = "adam"  # ignored when FitHooks.step_fn makes the update
    desc: str = "train"  # the progress bar's label, and part of the checkpoint's tag
    progress: bool = True
    # Trade time for memory without changing what is optimised (see ``fit``).
    low_memory: bool = False

    @classmethod
    def of(cls, cfg, desc: str, progress: bool = True) -> FitSettings:
        """From a method's config: its ``steps``, ``lr`` and, where it has them, ``optimizer`` and
        ``low_memory``."""
        return cls(
            cfg.steps,
            cfg.lr,
            getattr(cfg, "optimizer", "adam"),
            desc,
            progress,
            getattr(cfg, "low_memory", False),
        )


@dataclass
class FitHooks:
    """What a caller plugs into the loop (all optional).

    ``grad_hook()`` runs between backward and step (SalUn's saliency mask); ``after_step(step)``
    after each step (the relearning attack evaluates there; a true return ends the loop after that
    step, as a finished loop: the attack stops at resurgence when asked); ``guard(step)`` after the loss and
    before the step, a message from it stops the loop with ``Diverged`` (``DivergenceGuard``);
    ``step_fn(step)`` replaces the optimizer's step for methods whose update is not a gradient step
    (HAMU, IEU's noise): it reads ``p.grad``. ``checkpoint`` saves and restores the loop's state;
    for that it must see the ``generators`` the loss draws from and, in ``extra``, the lists that
    ``loss_fn`` or ``after_step`` append to (JSON-able; restored in place).
    """

    grad_hook: Callable[[], None] | None = None
    after_step: Callable[[int], bool | None] | None = None
    guard: Callable[[int], str | None] | None = None
    step_fn: Callable[[int], None] | None = None
    generators: Sequence[torch.Generator] = ()
    extra: dict[str, list] | None = None
    checkpoint: Checkpointer | None = None


def fit(
    module: torch.nn.Module,
    params: dict[str, torch.nn.Parameter],
    loss_fn: Callable[[int], torch.Tensor],
    settings: FitSettings,
    hooks: FitHooks | None = None,
) -> list[float]:
    """Gradient steps on ``params`` (of ``module``) with ``loss_fn(step)``; returns the loss per step.

    The one training loop: every gradient method and the relearning attack go through it. Only
    ``params`` are trainable during the loop; afterwards ``module`` is left frozen and in eval mode,
    whatever happened.

    A non-finite loss or gradient stops the loop *before* the step that would corrupt the
    weights, so the UNet keeps the last good weights, and ``NonFiniteLoss`` says so.

    ``settings.low_memory`` trades time for memory without changing what is optimised: the module's
    gradient checkpointing (diffusers models) is on for the loop, so activations are recomputed in
    the backward pass instead of kept, and (without ``grad_hook`` or ``step_fn``, which need every
    gradient at once) each tensor is stepped as soon as its gradient is complete (``StepInBackward``).
    """
    s, hooks = settings, hooks or FitHooks()
    if s.steps <= 0:
        raise EraseError(f"steps must be positive, got {s.steps}")
    plist = list(params.values())
    own_step = hooks.step_fn is not None
    opt = (
        None
        if own_step
        else make_optimizer(plist, s.optimizer, s.lr, foreach=False if s.low_memory else None)
    )
    in_backward = s.low_memory and opt is not None and hooks.grad_hook is None
    state = LoopState(params, opt, tuple(hooks.generators), hooks.extra or {})
    tag = loop_tag(s.desc, s.steps, s.lr, "own step" if own_step else s.optimizer, params)
    module.requires_grad_(False)
    for p in plist:
        p.requires_grad_(True)
    module.train()
    was_checkpointing = getattr(module, "is_gradient_checkpointing", False)
    if s.low_memory and not was_checkpointing:
        if not hasattr(module, "enable_gradient_checkpointing"):
            raise EraseError(f"{type(module).__name__} has no gradient checkpointing; leave low_memory off")
        module.enable_gradient_checkpointing()
    stepper = StepInBackward(opt, plist) if in_backward else None
    try:
        looping = (
            contextlib.nullcontext()
            if hooks.checkpoint is None
            else hooks.checkpoint.loop(state, desc=s.desc, tag=tag, steps=s.steps)
        )
        with looping:
            if not state.finished:
                _loop(state, loss_fn, s, hooks, stepper)
    finally:
        if stepper is not None:
            stepper.remove()
        module.eval().requires_grad_(False)
        if s.low_memory and not was_checkpointing:
            module.disable_gradient_checkpointing()
    return state.losses


class StepInBackward:
    """Steps each trained tensor as soon as its gradient is complete, inside the backward pass, and
    frees that gradient: the gradients of all trained tensors never exist at once (for ESD-x on
    SD 1.5, 176 MB less at the backward pass's peak).

    The weights are the same as stepping after the backward pass: every optimizer here (Adam, AdamW,
    SGD with or without momentum) updates a tensor from that tensor's gradient and state alone.
    The cost is in the non-finite check: a bad gradient is seen when it arrives, after the tensors
    whose gradients came first have taken that step. The loop stops there and says how many did.
    """

    def __init__(self, opt: torch.optim.Optimizer, plist: list[torch.nn.Parameter]):
        self.opt, self.total = opt, len(plist)
        self.bad: bool = False
        self.stepped = 0
        self.handles = [p.register_post_accumulate_grad_hook(self._arrived) for p in plist]

    def start(self) -> None:
        self.bad, self.stepped = False, 0

    def _arrived(self, p: torch.nn.Parameter) -> None:
        if not self.bad and not torch.isfinite(p.grad).all():
            self.bad = True
        if not self.bad:
            # Every other trained tensor's gradient is None here (freed after its own step, or
            # not computed yet), so the optimizer's step touches this tensor only. It still scans
            # every tensor for a gradient: 0.1 s per iteration for SD 1.5's 700 tensors (params
            # "all"), against seconds for the iteration itself.
            self.opt.step()
            self.stepped += 1
        p.grad = None

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _loop(state: LoopState, loss_fn, s: FitSettings, hooks: FitHooks, stepper: StepInBackward | None) -> None:
    plist, opt, losses, desc = list(state.params.values()), state.optimizer, state.losses, s.desc
    bar = tqdm(range(state.step, s.steps), desc=desc, disable=not s.progress, leave=False, initial=state.step)
    for step in bar:
        loss = loss_fn(step)
        kept = f"stopped and kept the weights of step {step - 1}" if step else "stopped before any step"
        if not torch.isfinite(loss):
            raise NonFiniteLoss(
                f"{desc}: loss became {loss.item()} at step {step}; {kept}; lower the learning rate"
            )
        if hooks.guard is not None and (why := hooks.guard(step)):
            raise Diverged(
                f"{desc}: {why}; {kept}; lower the learning rate or the steps, or weigh the retain set more"
            )
        for p in plist:
            p.grad = None
        if stepper is not None:
            stepper.start()
        loss.backward()
        if stepper is not None and stepper.bad:
            raise NonFiniteLoss(
                f"{desc}: gradient became non-finite at step {step}; low_memory steps each tensor as its "
                f"gradient arrives, so {stepper.stepped} of {stepper.total} tensors took step {step} and "
                f"the rest kept {f'the weights of step {step - 1}' if step else 'their initial weights'}; "
                "lower the learning rate"
            )
        if hooks.grad_hook is not None:
            hooks.grad_hook()
        if not all(torch.isfinite(p.grad).all() for p in plist if p.grad is not None):
            for p in plist:
                p.grad = None
            raise NonFiniteLoss(
                f"{desc}: gradient became non-finite at step {step}; {kept}; lower the learning rate"
            )
        if hooks.step_fn is not None:
            with torch.no_grad():
                hooks.step_fn(step)
        elif stepper is None:
            opt.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        stop = hooks.after_step(step) if hooks.after_step is not None else False
        state.step = step + 1
        if stop:
            break  # the checkpointer saves the loop as finished, here
        if hooks.checkpoint is not None:
            hooks.checkpoint.step_done(state)
