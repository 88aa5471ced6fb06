"""The relearning attack: fine-tune an edited UNet on a few examples of the erased concept and
count the steps until it comes back.

One loop for every method and optimizer (it is the experimental control): the standard diffusion
loss (``erase.diffusion.diffusion_loss``), a fixed data order and noise stream from the seed, the
gradient loop of ``erase.methods.base.fit``; only the optimizer and its learning rate differ
between runs of a comparison.

Steps to resurgence is our reconstruction of seed 002's "relearning convergence delay" (the paper's
exact definition is not available): the first evaluated step at which accuracy on the erased
concept reaches ``tau`` times the original model's. A run that never gets there within its budget
is censored and reported as "> budget", never as a number.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from erase.diffusion import Conditioning, diffusion_loss, encode_prompts
from erase.errors import EraseError
from erase.layers import select_parameters
from erase.methods.base import ImageSet, fit, make_optimizer

OPTIMIZERS = ("sgd", "sgdm", "adam", "adamw")
RELEARN_PARAMS = ("all", "xattn", "xattn-kv", "non-xattn", "changed")


@dataclass(frozen=True)
class RelearnConfig:
    """One relearning run. Everything but ``optimizer`` and ``lr`` is shared across a comparison."""

    optimizer: str = "adam"  # sgd, sgdm (SGD with momentum 0.9), adam, adamw
    lr: float = 1e-4
    steps: int = 100  # the budget
    batch_size: int = 4
    eval_every: int = 10  # evaluate every k steps (and at step 0)
    params: str = "all"  # all, xattn, xattn-kv, non-xattn, or "changed" (the tensors the edit changed)
    seed: int = 0  # data order and diffusion noise
    tau: float = 0.8  # resurgence threshold, as a share of the original model's accuracy

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
        if not 0 < self.tau <= 1:
            raise EraseError(f"tau must be in (0, 1], got {self.tau}")
        make_optimizer([torch.nn.Parameter(torch.zeros(1))], self.optimizer, self.lr)  # validates


@dataclass
class RelearnData:
    """Clean latents and text conditioning of the relearning examples, encoded once."""

    latents: torch.Tensor
    cond: Conditioning
    prompts: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.prompts)


@torch.no_grad()
def encode_examples(pipe, examples: ImageSet) -> RelearnData:
    """VAE latents (scaled as the UNet sees them) and text conditioning for (image, prompt) pairs."""
    if len(examples.images) == 0:
        raise EraseError("no relearning examples; give at least one (image, caption) pair")
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    proc = pipe.image_processor
    x = torch.cat([proc.preprocess(im.convert("RGB").resize((size, size))) for im in examples.images])
    x = x.to(pipe.device, pipe.vae.dtype)
    latents = pipe.vae.encode(x).latent_dist.mean * pipe.vae.config.scaling_factor
    return RelearnData(latents, encode_prompts(pipe, list(examples.prompts)), tuple(examples.prompts))


def generated_examples(
    pipe, prompts: Sequence[str], n: int, *, seed: int = 0, steps: int = 25, guidance: float = 7.5
) -> ImageSet:
    """``n`` examples drawn by ``pipe`` (the original model), cycling through ``prompts``."""
    from erase.generate import generate

    if n <= 0:
        raise EraseError(f"the number of relearning examples must be positive, got {n}")
    chosen = [prompts[i % len(prompts)] for i in range(n)]
    # Seeds far from the evaluation seeds (1000+) so that no evaluated image was trained on.
    images = [
        generate(pipe, [p], [50_000 + seed * 1_000 + i], steps=steps, guidance=guidance, progress=False)[0]
        for i, p in enumerate(chosen)
    ]
    return ImageSet(tuple(images), tuple(chosen))


def load_image_folder(folder: str | Path) -> ImageSet:
    """A folder of images with ``captions.txt`` (``FILENAME<TAB>CAPTION`` per line) or
    ``metadata.jsonl`` (``{"file_name": ..., "text": ...}`` per line, the diffusers convention)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EraseError(f"relearning folder {folder} does not exist; pass a folder of images with captions")
    pairs = []
    if (folder / "metadata.jsonl").is_file():
        for ln in (folder / "metadata.jsonl").read_text().splitlines():
            if ln.strip():
                rec = json.loads(ln)
                pairs.append((rec.get("file_name"), rec.get("text")))
    elif (folder / "captions.txt").is_file():
        for ln in (folder / "captions.txt").read_text().splitlines():
            if ln.strip():
                name, _, text = ln.partition("\t")
                pairs.append((name.strip(), text.strip()))
    else:
        raise EraseError(
            f"relearning folder {folder} has no captions.txt or metadata.jsonl; write one caption per image"
        )
    if not pairs:
        raise EraseError(f"relearning folder {folder} lists no images; add (image, caption) lines")
    images, prompts = [], []
    for name, text in pairs:
        if not name or not text:
            raise EraseError(f"relearning folder {folder}: every line needs a file name and a caption")
        path = folder / name
        try:
            images.append(Image.open(path).convert("RGB"))
        except OSError:
            raise EraseError(f"relearning image {path} is missing or not an image") from None
        prompts.append(text)
    return ImageSet(tuple(images), tuple(prompts))


def relearn(
    pipe,
    data: RelearnData,
    cfg: RelearnConfig,
    evaluate: Callable[[], dict[str, float]],
    *,
    changed: Sequence[str] = (),
    progress: bool = True,
) -> dict:
    """Fine-tune ``pipe.unet`` in place on ``data``; ``evaluate()`` (accuracy per concept) runs at
    step 0 and every ``cfg.eval_every`` steps. Returns the curve and the losses."""
    unet, sched = pipe.unet, pipe.scheduler
    if cfg.params == "changed":
        if not changed:
            raise EraseError("relearning params 'changed' needs the edit's tensor names (a delta)")
        named = dict(unet.named_parameters())
        params = {k: named[k] for k in changed}
    else:
        params = select_parameters(unet, cfg.params)
    trainable = sum(p.numel() for p in params.values())
    gen = torch.Generator().manual_seed(cfg.seed)
    # A fixed data order: one permutation per pass through the examples, from the seed.
    order: list[int] = []
    while len(order) < cfg.steps * cfg.batch_size:
        order += torch.randperm(len(data), generator=gen).tolist()

    curve = [{"step": 0, **evaluate()}]

    def loss_fn(step: int) -> torch.Tensor:
        unet.train()
        idx = torch.tensor(order[step * cfg.batch_size : (step + 1) * cfg.batch_size])
        cond = data.cond[idx]
        return diffusion_loss(
            unet, sched, data.latents[idx], cond.embeds, generator=gen, added_cond_kwargs=cond.added
        )

    def after_step(step: int) -> None:
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            unet.eval()
            with torch.no_grad():
                curve.append({"step": step + 1, **evaluate()})

    losses = fit(
        unet,
        params,
        loss_fn,
        steps=cfg.steps,
        lr=cfg.lr,
        optimizer=cfg.optimizer,
        desc=f"relearn {cfg.optimizer} lr={cfg.lr:g}",
        progress=progress,
        after_step=after_step,
    )
    return {"curve": curve, "losses": losses, "trainable_parameters": trainable}


def steps_to_resurgence(curve: Sequence[dict], concept: str, original: float, tau: float) -> int | None:
    """First evaluated step with accuracy >= tau * original; None when censored (never reached)."""
    bar = tau * original
    for point in curve:
        if point[concept] >= bar:
            return int(point["step"])
    return None


def format_resurgence(steps: int | None, budget: int) -> str:
    return f"> {budget}" if steps is None else str(steps)
