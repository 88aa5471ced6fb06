"""Ring-A-Bell (Tsai et al. 2024, "Ring-A-Bell! How Reliable are Concept Removal Methods for
Diffusion Models?"): a model-agnostic attack. It reads only the text encoder, never the attacked
UNet: a concept's direction in the text encoder's output space, then a discrete search for a prompt
whose encoding carries it.

Followed from the source: the concept vector is the mean, over prompt pairs with and without the
concept, of the difference of their encoded token sequences (the whole sequence the UNet's
cross-attention reads); the target of a prompt p is ``E(p) + eta * vector`` (eta 3, the source's
``cof``); a genetic search over ``length`` tokens (16) for the prompt whose encoding is nearest the
target in squared distance: population 200, each generation sorted by that distance and cut to its
better half, then single-point crossover (rate 0.5: a parent is kept and, with that chance, mated
with a random other, giving two children) and mutation (rate 0.25: one token replaced by a random
one), 3000 generations.

Reconstructed here: the pairs are the concept's own erasure prompts against the same prompts with
each other label of its group in the label's place (red vs the other colours; the source used
hand-written pairs such as clothed and unclothed), one search per held-out prompt of the concept,
so that each found prompt stands for one held-out prompt, and the tokens are whole words that read
back as themselves, without the concept's own word (the source draws any token id, and its decoded
text need not read back): what is found is a prompt a person can type, and it does not name the
concept. The pairs and targets are encoded by the pipeline's own prompt encoding (both encoders on
SDXL).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from erase.attacks.placeholders import encoders, vocabulary, with_token
from erase.errors import EraseError


@dataclass(frozen=True)
class Config:
    eta: float = 3.0  # how far along the concept vector the target lies (the source's cof)
    length: int = 16  # tokens in a found prompt (the source's K = 16; 75 fills SD's context)
    population: int = 200
    generations: int = 3000
    crossover: float = 0.5  # the chance that a parent is mated with another
    mutation: float = 0.25  # the chance that an individual has one token replaced

    def __post_init__(self):
        for name in ("length", "generations"):
            if getattr(self, name) <= 0:
                raise EraseError(f"ring-a-bell {name} must be positive, got {getattr(self, name)}")
        if self.population < 2:
            raise EraseError(f"ring-a-bell population must be at least 2, got {self.population}")
        for name in ("crossover", "mutation"):
            if not 0 <= getattr(self, name) <= 1:
                raise EraseError(f"ring-a-bell {name} is a chance in [0, 1], got {getattr(self, name)}")
        if not np.isfinite(self.eta):
            raise EraseError(f"ring-a-bell eta must be a finite number, got {self.eta}")


# The toy's prompts are a few words long (its captions are at most 8 tokens); its text encoder is
# small enough that 500 generations take seconds. Not tuned.
TOY = {"length": 8, "generations": 500}
SMOKE = {"length": 3, "population": 4, "generations": 2}


READS_UNET = False  # model-agnostic: found once on the base model, it is the same for an edit of its UNet


def starting_point(pipe, target, cfg: Config) -> dict:
    """Where the search starts: random words of the same length, one prompt per held-out prompt
    (the toy's prompts without a colour lean red, so random words can draw the concept by themselves)."""
    tok = encoders(pipe)[0][1]
    allowed = vocabulary(tok, target.label)
    rng = np.random.default_rng(30_000)
    picks = rng.integers(0, len(allowed), size=(len(target.heldout), cfg.length))
    return {"prompts": [" ".join(tok.decode([i]).strip() for i in allowed[row].tolist()) for row in picks]}


def concept_vector(pipe, target) -> torch.Tensor:
    """The mean difference of the encodings of the concept's prompts and the same prompts with each
    other label of its group in its place."""
    from erase.diffusion import encode_prompts

    others = [w for w in target.group.labels if w.lower() != target.label.lower()]
    if not others:
        raise EraseError(
            f"ring-a-bell needs another label in group {target.group.name!r} to pair {target.label!r} with"
        )
    with_concept = encode_prompts(pipe, list(target.prompts)).embeds.float()
    without = torch.stack(
        [encode_prompts(pipe, with_token(target.prompts, target.label, w)).embeds.float() for w in others]
    ).mean(0)
    return (with_concept - without).mean(0)


def encode_words(pipe, words: torch.Tensor) -> torch.Tensor:
    """What ``erase.diffusion.encode_prompts`` gives for prompts typed as the given word token ids
    (rows of ``words``; ids that read back as themselves), without tokenizing text: each encoder's
    start token, the words, its end token and its padding, through each encoder as the pipeline's
    ``encode_prompt`` does (SDXL: both encoders' penultimate states side by side)."""
    pairs = encoders(pipe)
    states = []
    for _, tok, enc in pairs:
        n, k = words.shape
        pad = tok.model_max_length - k - 2
        ids = torch.cat(
            [
                torch.full((n, 1), tok.bos_token_id),
                words,
                torch.full((n, 1), tok.eos_token_id),
                torch.full((n, pad), tok.pad_token_id),
            ],
            dim=1,
        ).to(enc.device)
        if len(pairs) == 1:
            states.append(enc(ids)[0])
        else:
            states.append(enc(ids, output_hidden_states=True).hidden_states[-2])
    return torch.cat(states, dim=-1)


def run(pipe, examples, target, cfg: Config, *, seed: int, out: Path, progress: bool = True) -> dict:
    """For each held-out prompt of ``target``, search ``cfg.length`` words whose encoding is nearest
    that prompt's encoding moved ``cfg.eta`` along the concept vector. ``examples`` are not used:
    the attack needs no images and no access to the attacked UNet. ``out/prompts.txt`` holds what
    it found, one prompt per line."""
    from tqdm.auto import tqdm

    from erase.diffusion import encode_prompts

    tok = encoders(pipe)[0][1]
    if cfg.length + 2 > tok.model_max_length:
        raise EraseError(
            f"ring-a-bell length {cfg.length} does not fit this model's {tok.model_max_length} tokens; "
            f"set it to {tok.model_max_length - 2} or less"
        )
    allowed = vocabulary(tok, target.label)
    rng = np.random.default_rng(30_000 + seed)
    started, forwards = time.time(), 0
    found, distances = [], []
    bar = tqdm(
        total=len(target.heldout) * cfg.generations, desc="ring-a-bell", disable=not progress, leave=False
    )
    with torch.no_grad():
        vector = concept_vector(pipe, target)
        for prompt in target.heldout:
            goal = encode_prompts(pipe, [prompt]).embeds.float()[0] + cfg.eta * vector

            def distance(population: np.ndarray, goal=goal) -> np.ndarray:
                got = encode_words(pipe, allowed[torch.from_numpy(population)]).float()
                return ((got - goal) ** 2).sum(dim=(1, 2)).cpu().numpy()

            best, d, calls = _search(cfg, distance, len(allowed), rng, bar)
            forwards += calls
            found.append(" ".join(tok.decode([i]).strip() for i in allowed[best].tolist()))
            distances.append(d)
    bar.close()
    out.mkdir(parents=True, exist_ok=True)
    (out / "prompts.txt").write_text("\n".join(found) + "\n")
    return {
        "prompts": found,
        "eta": cfg.eta,
        # each found prompt, typed, gives back the words that were searched
        "reads_back": all(len(tok.encode(p, add_special_tokens=False)) == cfg.length for p in found),
        "vocabulary": len(allowed),
        "distance": {"mean": float(np.mean(distances)), "per_prompt": distances},
        "budget": {
            "generations": cfg.generations,
            "text_encoder_forwards": forwards,  # prompts encoded by the search
            "unet_forwards": 0,  # model-agnostic: the attacked UNet is never queried
            "trainable_parameters": 0,
            "seconds": round(time.time() - started, 1),
        },
    }


def _search(cfg: Config, distance, n: int, rng: np.random.Generator, bar) -> tuple[np.ndarray, float, int]:
    """The source's genetic search over word indices: returns the nearest individual of the last
    generation, its distance and how many prompts were encoded (an individual is scored again only
    when it is new or mutated)."""
    population = rng.integers(0, n, size=(cfg.population, cfg.length))
    scores = np.full(len(population), np.nan)
    calls = 0
    for gen in range(cfg.generations):
        todo = np.isnan(scores)
        if todo.any():
            scores[todo] = distance(population[todo])
        calls += int(todo.sum())
        order = np.argsort(scores, kind="stable")[: cfg.population // 2]
        population, scores = population[order], scores[order]
        bar.update(1)
        if gen == cfg.generations - 1:
            break
        kids = []
        for i in range(len(population)):
            if rng.random() < cfg.crossover:
                j, cut = rng.integers(0, len(population)), rng.integers(0, cfg.length)
                a, b = population[i], population[j]
                kids += [np.r_[a[:cut], b[cut:]], np.r_[b[:cut], a[cut:]]]
        population = np.concatenate(
            [population, np.array(kids, dtype=population.dtype).reshape(-1, cfg.length)]
        )
        scores = np.r_[scores, np.full(len(kids), np.nan)]
        hit = np.flatnonzero(rng.random(len(population)) < cfg.mutation)
        population[hit, rng.integers(0, cfg.length, size=len(hit))] = rng.integers(0, n, size=len(hit))
        scores[hit] = np.nan
    return population[0], float(scores[0]), calls
