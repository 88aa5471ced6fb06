"""The relearning attack behind the attack interface: fine-tune the attacked UNet on the examples of
the concept for a fixed budget, then draw the concept's own prompts with the relearned weights.

It is ``erase relearn``'s attack (one loop, ``erase.relearn.relearn``: the same loss, data order and
noise from the seed) read the way every registered attack is read: success at the end of its
budget, on the erased model, the base model and the oracle (a model that never learned the concept,
relearned the same way: what the budget teaches from scratch is the floor of "gone"). ``erase
relearn`` is the same attack with curves, optimizer and rate sweeps and steps to resurgence.

What it finds is weights, not a prompt: they are kept in memory (``_weights``, the trained tensors'
values) and put into the pipeline to draw, then taken out; the pipeline is left as it was. A run
whose loss stops being finite is "diverged", its own outcome, not a success or a failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from erase.errors import EraseError
from erase.optim import DEFAULT_LRS, OPTIMIZERS, RELEARN_PARAMS

# "changed" needs the edit's tensor names, which only ``erase relearn`` (it reads the delta) knows.
PARAMS = tuple(p for p in RELEARN_PARAMS if p != "changed")


@dataclass(frozen=True)
class Config:
    optimizer: str = "adam"
    lr: float | None = None  # None: the optimizer's default rate (erase.optim.DEFAULT_LRS)
    steps: int = 100  # the budget
    batch_size: int = 4
    params: str = "all"  # what trains: all, xattn, xattn-kv, non-xattn
    snr_gamma: float | None = None  # Min-SNR weighting; None = the plain loss

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise EraseError(
                f"relearn optimizer {self.optimizer!r} is unknown; choose one of {', '.join(OPTIMIZERS)}"
            )
        if self.lr is not None and not self.lr > 0:
            raise EraseError(f"relearn lr must be positive, got {self.lr}")
        for name in ("steps", "batch_size"):
            if getattr(self, name) <= 0:
                raise EraseError(f"relearn {name} must be positive, got {getattr(self, name)}")
        if self.params not in PARAMS:
            raise EraseError(f"relearn params must be one of {', '.join(PARAMS)}, got {self.params!r}")
        if self.snr_gamma is not None and not self.snr_gamma > 0:
            raise EraseError(f"relearn snr_gamma must be positive, got {self.snr_gamma}")

    @property
    def rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LRS[self.optimizer][0]


# The toy was trained with Min-SNR 5; 40 steps is the budget of the toy relearning study (issue 16,
# pipelines/toy-relearning.yaml), at which, at the default rates (Adam 3e-4, SGD 0.03), the cross
# oracle did not come back on tuning seeds (peaks 38/48 and 9/48, docs/results/toy-relearning.md):
# what an erasure gives back beyond that within the same budget, it kept.
TOY = {"steps": 40, "snr_gamma": 5.0}
SMOKE = {"steps": 2, "batch_size": 1}


def run(pipe, examples, target, cfg: Config, *, seed: int, out: Path, progress: bool = True) -> dict:
    """Relearn ``pipe.unet`` on ``examples`` for ``cfg.steps`` steps; the relearned values are kept
    in ``_weights`` and the UNet is put back as it was."""
    import time

    import torch

    from erase.attacks.placeholders import kept_flags, loss_summary
    from erase.relearn import RelearnConfig, encode_examples, relearn, relearn_parameters

    unet = pipe.unet
    data = encode_examples(pipe, examples)
    rcfg = RelearnConfig(
        optimizer=cfg.optimizer,
        lr=cfg.rate,
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        eval_every=cfg.steps,  # no curve: the attack is read once, at the end of its budget
        params=cfg.params,
        seed=seed,
        tau=1.0,
        snr_gamma=cfg.snr_gamma,
        stop_at_resurgence=False,
    )
    names = list(relearn_parameters(unet, cfg.params))
    named = dict(unet.named_parameters())
    before = {n: named[n].detach().to("cpu", copy=True) for n in names}
    started = time.time()
    with kept_flags(pipe):
        try:
            got = relearn(pipe, data, rcfg, lambda final: {}, start={}, progress=progress)
            weights = {n: named[n].detach().to("cpu", copy=True) for n in names}
        finally:
            with torch.no_grad():
                for n in names:
                    named[n].copy_(before[n])
            unet.eval()
    out.mkdir(parents=True, exist_ok=True)
    return {
        "optimizer": cfg.optimizer,
        "lr": cfg.rate,
        "prompts": list(target.heldout),  # the concept's own words: the weights are what changed
        "diverged": got["diverged"],
        "budget": {
            "steps": cfg.steps,
            "examples": len(data),
            "unet_forwards": cfg.steps,  # one batched forward and backward per step
            "trainable_parameters": got["trainable_parameters"],
            "seconds": round(time.time() - started, 1),
        },
        "loss": None if got["losses"] is None else loss_summary(got["losses"]),
        "_weights": weights,
    }


def load(pipe, found: dict) -> None:
    """The relearned values into the UNet, what they replace kept in ``found`` until ``unload``."""
    import torch

    named = dict(pipe.unet.named_parameters())
    found["_kept"] = {n: named[n].detach().clone() for n in found["_weights"]}
    with torch.no_grad():
        for n, value in found["_weights"].items():
            named[n].copy_(value)


def unload(pipe, found: dict) -> None:
    import torch

    named = dict(pipe.unet.named_parameters())
    with torch.no_grad():
        for n, value in found.pop("_kept").items():
            named[n].copy_(value)
