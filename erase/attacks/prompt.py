"""Adversarial prompt attack in the style of UnlearnDiffAtk (Zhang et al. 2024, "To Generate or Not?
Safety-Driven Unlearned Diffusion Models Are Still Easy to Generate Unsafe Images ... For Now"):
the erased model is its own classifier. A few words are put in front of the concept's prompts and
chosen so that the erased model denoises images of the concept best with them; the result is a
prompt in words, which anyone can type.

Followed from the source: ``tokens`` words in front of the prompt (their ``prefix_k``, k = 3); each
word a distribution over the vocabulary, initialised uniform, from which one word is drawn per step
(a one-hot; its gradient passed straight through, clipped to [-1, 1]); the erased model's plain
denoising loss on the concept's images with the words' embeddings in the prompt; Adam at 1e-2 with
weight decay 0.1; after each step each distribution projected back onto the simplex; the words at
the end are each distribution's most likely. Reconstructed here: one prefix for all the concept's
images and prompts (the source attacks one image and its prompt at a time, with early stopping on
its classifier), timesteps drawn uniformly (from ``t_min``) instead of its walk through 50 fixed
timesteps, 2000 steps as the source's 50 x 40 without the early stop, and the vocabulary: whole
words only (tokens that end a word, so that the prompt reads back to the same tokens), without the
tokenizer's special tokens or the concept's own word.

``search="random"`` is the control the attack must beat: as many random prefixes as the gradient
search takes steps, each scored by the same loss on one fixed batch (examples, timesteps, noise),
the best one kept. The same budget of UNet calls; no gradients.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from erase.attacks.placeholders import (
    Placeholder,
    check_t_min,
    encoders,
    freeze,
    kept_flags,
    loss_summary,
    remove_token,
    text_loss,
    token_for,
    token_names,
    vocabulary,
)
from erase.errors import EraseError

SEARCHES = ("gradient", "random")


@dataclass(frozen=True)
class Config:
    tokens: int = 3  # words put in front of each prompt (the source's k)
    steps: int = 2000  # the source's 50 timesteps x 40 iterations
    lr: float = 1e-2
    weight_decay: float = 0.1
    batch_size: int = 1  # the source attacks one image at a time
    search: str = "gradient"  # or "random": the control, same budget
    t_min: int = 0  # timesteps t >= t_min only (0: all)
    snr_gamma: float | None = None  # Min-SNR weighting of the loss; None = the plain loss

    def __post_init__(self):
        for name in ("tokens", "steps", "batch_size"):
            if getattr(self, name) <= 0:
                raise EraseError(f"prompt {name} must be positive, got {getattr(self, name)}")
        if not self.lr > 0:
            raise EraseError(f"prompt lr must be positive, got {self.lr}")
        if self.weight_decay < 0:
            raise EraseError(f"prompt weight_decay must be 0 or more, got {self.weight_decay}")
        if self.search not in SEARCHES:
            raise EraseError(f"prompt search must be one of {', '.join(SEARCHES)}, got {self.search!r}")
        if self.t_min < 0:
            raise EraseError(f"prompt t_min must be 0 or more, got {self.t_min}")


# 150 steps of batch 8 is inversion's toy budget, Min-SNR 5 the toy's training weighting. The rate
# and t_min were chosen on the base model, tuning seeds, three attack seeds, the cross read by the
# toy-fit judge (docs/results/prompt_tuning.json; rule in bench/attack_tuning.py): lr 3e-3 at all
# timesteps drew the cross in 108/108 images, as did 1e-2; the rule's tie goes to the lower rate.
# t_min 0 is at the end of its grid, but nothing lies below it. (Until then, t_min 500 at the source's
# 1e-2, chosen without tuning: its words named another shape on the base model at attack seed 0.)
TOY = {"steps": 150, "batch_size": 8, "snr_gamma": 5.0, "lr": 3e-3}
SMOKE = {"steps": 2, "batch_size": 1}


def project_to_simplex(p: torch.Tensor) -> torch.Tensor:
    """Each row's Euclidean projection onto the probability simplex (Duchi et al. 2008): the point
    the source's bisection converges to, computed exactly by sorting."""
    u, _ = torch.sort(p, dim=-1, descending=True)
    css = u.cumsum(-1) - 1
    k = torch.arange(1, p.shape[-1] + 1, device=p.device, dtype=p.dtype)
    rho = ((u - css / k) > 0).sum(-1, keepdim=True)  # how many coordinates stay positive
    theta = css.gather(-1, rho - 1) / rho
    return (p - theta).clamp(min=0)


class _DrawWord(torch.autograd.Function):
    """One word per row drawn from its distribution, as a one-hot; the gradient goes straight
    through to the distribution, clipped to [-1, 1] as in the source."""

    @staticmethod
    def forward(ctx, probs, generator):
        idx = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        return torch.nn.functional.one_hot(idx, probs.shape[-1]).to(probs.dtype)

    @staticmethod
    def backward(ctx, grad):
        return torch.nn.functional.hardtanh(grad), None


def run(pipe, examples, target, cfg: Config, *, seed: int, out: Path, progress: bool = True) -> dict:
    """Search ``cfg.tokens`` words that, in front of the concept's prompts, make ``pipe`` denoise
    ``examples`` best. The pipeline is left as it was; ``out/prompt.txt`` holds the words."""
    from erase.data import encode_set
    from erase.train import FitHooks, FitSettings, fit

    check_t_min(pipe, cfg.t_min, "prompt")
    pairs = encoders(pipe)
    sizes = {len(tok) for _, tok, _ in pairs}
    if len(sizes) != 1:
        raise EraseError(
            f"the prompt attack needs one vocabulary for all text encoders; they have {sorted(sizes)}"
        )
    allowed = vocabulary(pairs[0][1], target.label)
    tables = [enc.get_input_embeddings().weight.detach()[allowed.to(enc.device)] for _, _, enc in pairs]
    data = encode_set(pipe, examples, "prompt attack example")
    token = token_for(target.name, "adv")
    captions = [f"{token} {p}" for p in examples.prompts]
    words = torch.Generator().manual_seed(20_000 + seed)  # the words drawn
    # The word distributions stay float32 on the CPU with their generator; each step's one-hots
    # are cast to each encoder's device and dtype (fp16 on a GPU) where they meet its embeddings.
    probs = torch.nn.Parameter(torch.full((cfg.tokens, len(allowed)), 1.0 / len(allowed)))
    holders: list[Placeholder] = []

    def loss_with(onehot: torch.Tensor, order: torch.Generator, noise: torch.Generator) -> torch.Tensor:
        for h, table in zip(holders, tables):
            h.vectors = onehot.to(table) @ table
        return text_loss(pipe, data, captions, cfg, order, noise, grad=onehot.requires_grad)

    order = torch.Generator().manual_seed(seed)  # which examples each step sees
    noise = torch.Generator().manual_seed(10_000 + seed)  # the diffusion noise and timesteps

    def gradient_loss(step: int) -> torch.Tensor:
        return loss_with(_DrawWord.apply(probs, words), order, noise)

    def weight_decay() -> None:  # torch Adam's (coupled) weight decay, as the source's optimizer
        probs.grad.add_(probs.detach(), alpha=cfg.weight_decay)

    def project(step: int) -> None:
        with torch.no_grad():
            probs.copy_(project_to_simplex(probs))

    started = time.time()
    with kept_flags(pipe):
        try:
            for _, tok, enc in pairs:  # diffusers writes TOKEN and expands it to TOKEN TOKEN_1 ...
                width = enc.get_input_embeddings().weight.shape[1]
                pipe.load_textual_inversion(
                    {token: torch.zeros(cfg.tokens, width)}, token=token, tokenizer=tok, text_encoder=enc
                )
                ids = tok.convert_tokens_to_ids(token_names(token, cfg.tokens))
                holders.append(Placeholder(enc, ids, tables[len(holders)][: cfg.tokens]))
            freeze(pipe)
            if cfg.search == "gradient":
                settings = FitSettings(cfg.steps, cfg.lr, "adam", f"prompt {token}", progress)
                hooks = FitHooks(grad_hook=weight_decay, after_step=project)
                losses = fit(pipe.text_encoder, {"words": probs}, gradient_loss, settings, hooks)
                chosen = probs.detach().argmax(-1)
            else:
                losses, chosen = _random_search(cfg, loss_with, words, len(allowed), seed, progress)
        finally:
            for h in holders:
                h.handle.remove()
            remove_token(pipe, token, cfg.tokens)
    ids = allowed[chosen].tolist()
    tok = pairs[0][1]
    prefix = " ".join(tok.decode([i]).strip() for i in ids)
    out.mkdir(parents=True, exist_ok=True)
    (out / "prompt.txt").write_text(prefix + "\n")
    return {
        "words": prefix,
        "word_ids": ids,
        "reads_back": tok.encode(prefix, add_special_tokens=False) == ids,  # the text is the tokens
        "search": cfg.search,
        "prompts": [f"{prefix} {p}" for p in target.heldout],
        "vocabulary": len(allowed),
        "budget": {
            "steps": cfg.steps,
            "examples": len(data),
            "unet_forwards": cfg.steps,  # one batched forward per step (and a backward for gradient)
            "trainable_parameters": probs.numel() if cfg.search == "gradient" else 0,
            "seconds": round(time.time() - started, 1),
        },
        "loss": loss_summary(losses),
    }


def _random_search(cfg: Config, loss_with, words: torch.Generator, n: int, seed: int, progress: bool):
    """As many random prefixes as the gradient search takes steps, each scored by the same loss on
    one and the same batch, timesteps and noise (the generators restarted for each), so that the
    prefixes are compared with each other and not with their luck; the lowest loss wins. Returns
    the losses and the chosen word indices."""
    from tqdm.auto import tqdm

    losses, best, chosen = [], float("inf"), None
    with torch.no_grad():
        for _ in tqdm(range(cfg.steps), desc="prompt (random search)", disable=not progress, leave=False):
            idx = torch.randint(0, n, (cfg.tokens,), generator=words)
            same = (torch.Generator().manual_seed(seed), torch.Generator().manual_seed(10_000 + seed))
            loss = float(loss_with(torch.nn.functional.one_hot(idx, n).float(), *same))
            losses.append(loss)
            if loss < best:
                best, chosen = loss, idx
    return losses, chosen
