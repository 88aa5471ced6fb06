"""What every method receives and returns, and the one fine-tuning loop the gradient methods share.

A method is a module with ``KIND`` (``"unlearning"`` or ``"untraining"``), a frozen ``Config``
dataclass and ``edit(pipe, inputs, cfg, *, seed, progress, checkpoint) -> dict``, which edits
``pipe.unet`` in place and returns a log with at least ``"params"``: the names of the parameters it
may have changed. ``checkpoint`` (``erase.checkpoint.Checkpointer`` or None) goes to ``fit``, with
the generators the loss draws from, so that an interrupted edit can resume.
Concept-level and data-level methods share this signature and differ only in which fields of
``EraseInputs`` they read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from tqdm.auto import tqdm

from erase.checkpoint import Checkpointer, LoopState, loop_tag
from erase.data import ImageSet
from erase.errors import EraseError

Kind = Literal["unlearning", "untraining"]


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
    guard: Callable[[int], str | None] | None = None,
    step_fn: Callable[[int], None] | None = None,
    generators: Sequence[torch.Generator] = (),
    extra: dict[str, list] | None = None,
    checkpoint: Checkpointer | None = None,
    low_memory: bool = False,
) -> list[float]:
    """Gradient steps on ``params`` (of ``module``) with ``loss_fn(step)``; returns the loss per step.

    Only ``params`` are trainable during the loop; afterwards ``module`` is left frozen and in
    eval mode, whatever happened.

    A non-finite loss or gradient stops the loop *before* the step that would corrupt the
    weights, so the UNet keeps the last good weights, and ``NonFiniteLoss`` says so.
    ``grad_hook`` runs between backward and step (SalUn's saliency mask, for instance);
    ``after_step(step)`` after each step (the relearning attack evaluates there). ``guard(step)``
    runs after the loss is computed and before the step; a message from it stops the loop with
    ``Diverged`` (see ``DivergenceGuard``). ``step_fn(step)`` replaces the optimizer's step for
    methods whose update is not a gradient step (HAMU, IEU's noise): it reads ``p.grad``.

    ``checkpoint`` (``erase.checkpoint.Checkpointer``) saves the loop's state every few steps and
    on SIGTERM, and restores it when resuming. For that it must see all the loop's state: the
    ``generators`` ``loss_fn`` draws from, and in ``extra`` the lists that ``loss_fn`` or
    ``after_step`` append to (JSON-able; restored in place).

    ``low_memory`` trades time for memory without changing what is optimised: the module's gradient
    checkpointing (diffusers models) is on for the loop, so activations are recomputed in the
    backward pass instead of kept, and (without ``grad_hook`` or ``step_fn``, which need every
    gradient at once) each tensor is stepped as soon as its gradient is complete (``StepInBackward``).
    """
    if steps <= 0:
        raise EraseError(f"steps must be positive, got {steps}")
    plist = list(params.values())
    opt = (
        make_optimizer(plist, optimizer, lr, foreach=False if low_memory else None)
        if step_fn is None
        else None
    )
    in_backward = low_memory and opt is not None and grad_hook is None
    state = LoopState(params, opt, tuple(generators), extra or {})
    tag = loop_tag(desc, steps, lr, optimizer if step_fn is None else "own step", params)
    module.requires_grad_(False)
    for p in plist:
        p.requires_grad_(True)
    module.train()
    was_checkpointing = getattr(module, "is_gradient_checkpointing", False)
    if low_memory and not was_checkpointing:
        if not hasattr(module, "enable_gradient_checkpointing"):
            raise EraseError(f"{type(module).__name__} has no gradient checkpointing; leave low_memory off")
        module.enable_gradient_checkpointing()
    stepper = StepInBackward(opt, plist) if in_backward else None
    try:
        looping = (
            contextlib.nullcontext()
            if checkpoint is None
            else checkpoint.loop(state, desc=desc, tag=tag, steps=steps)
        )
        with looping:
            if not state.finished:
                _loop(
                    state,
                    loss_fn,
                    steps,
                    desc,
                    progress,
                    grad_hook,
                    after_step,
                    guard,
                    step_fn,
                    checkpoint,
                    stepper,
                )
    finally:
        if stepper is not None:
            stepper.remove()
        module.eval().requires_grad_(False)
        if low_memory and not was_checkpointing:
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


def _loop(
    state, loss_fn, steps, desc, progress, grad_hook, after_step, guard, step_fn, checkpoint, stepper
) -> None:
    plist, opt, losses = list(state.params.values()), state.optimizer, state.losses
    bar = tqdm(range(state.step, steps), desc=desc, disable=not progress, leave=False, initial=state.step)
    for step in bar:
        loss = loss_fn(step)
        kept = f"stopped and kept the weights of step {step - 1}" if step else "stopped before any step"
        if not torch.isfinite(loss):
            raise NonFiniteLoss(
                f"{desc}: loss became {loss.item()} at step {step}; {kept}; lower the learning rate"
            )
        if guard is not None and (why := guard(step)):
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
        if grad_hook is not None:
            grad_hook()
        if not all(torch.isfinite(p.grad).all() for p in plist if p.grad is not None):
            for p in plist:
                p.grad = None
            raise NonFiniteLoss(
                f"{desc}: gradient became non-finite at step {step}; {kept}; lower the learning rate"
            )
        if step_fn is not None:
            with torch.no_grad():
                step_fn(step)
        elif stepper is None:
            opt.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if after_step is not None:
            after_step(step)
        state.step = step + 1
        if checkpoint is not None:
            checkpoint.step_done(state)


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
