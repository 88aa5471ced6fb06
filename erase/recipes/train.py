"""Train the toy world from nothing: VAE, then CLIP (whose text tower becomes the text encoder),
then the UNet. ``erase toy train`` calls ``train_toy``.

Exclusions (a concept such as ``color=red``, or sample ids) apply to the UNet's training data only.
The VAE and CLIP play the part of Stable Diffusion's pretrained components, which an erasure never
retrains; so the ideal references of untraining and unlearning (a UNet that never saw a forget set,
or never saw a concept) are the same recipe with ``--stages unet`` and an exclusion.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from erase.errors import EraseError
from erase.toy import nets
from erase.toy.tokenizer import (
    hf_tokenizer,
    learn_merges,
    open_clip_tokenizer,
    world_words,
    write_bpe,
)
from erase.toy.world import (
    AXES,
    HELDOUT_TEMPLATES,
    STYLES,
    TRAIN_TEMPLATES,
    World,
    caption,
    render_batch,
    select,
)

STAGES = ("vae", "clip", "unet")


@dataclass(frozen=True)
class ToyTrainConfig:
    """Everything that determines the toy world's weights.

    Step counts are fixed (never wall-clock budgets) so that a seed reproduces the weights.
    """

    seed: int = 0
    world_size: int = 4800  # training samples, ids 0..world_size-1
    stages: tuple[str, ...] = STAGES  # stages to train; the others are loaded from `base`
    exclude: tuple[str, ...] = ()  # concept exclusions for the UNet data, e.g. ("color=red",)
    exclude_ids: tuple[int, ...] = ()  # sample ids left out of the UNet data
    vae_steps: int = 400
    vae_batch: int = 32
    vae_lr: float = 2e-3
    clip_steps: int = 1000
    clip_batch: int = 128
    clip_lr: float = 2e-3
    unet_steps: int = 1200
    unet_batch: int = 32
    unet_lr: float = 1.5e-3
    unet_ema: float = 0.995  # EMA decay of the UNet weights that are saved
    snr_gamma: float = 5.0  # Min-SNR loss weighting: colour and shape are decided at high noise
    cfg_dropout: float = 0.1  # share of empty captions, for classifier-free guidance
    threads: int = 2
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        for name in (
            "world_size",
            "vae_steps",
            "vae_batch",
            "clip_steps",
            "clip_batch",
            "unet_steps",
            "unet_batch",
            "threads",
        ):
            if getattr(self, name) <= 0:
                raise EraseError(f"toy training: {name} must be positive, got {getattr(self, name)}")
        bad = [s for s in self.stages if s not in STAGES]
        if bad or not self.stages:
            got = f"unknown stage {bad[0]!r}" if bad else "no stage"
            raise EraseError(f"toy training: {got}; --stages takes some of {', '.join(STAGES)}")


def _lr(step: int, total: int, peak: float, warmup: int = 50) -> float:
    """Linear warm-up then cosine decay to 5% of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    frac = (step - warmup) / max(1, total - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [-1, 1], the range the VAE works in."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def _check(loss: torch.Tensor, stage: str, step: int) -> None:
    if not torch.isfinite(loss):
        raise EraseError(
            f"toy training: {stage} loss became {loss.item()} at step {step}; "
            "lower the learning rate or change the seed"
        )


# 1. VAE -----------------------------------------------------------------------------------------
def train_vae(cfg: ToyTrainConfig, images: torch.Tensor, log) -> tuple:
    torch.manual_seed(cfg.seed)
    vae = nets.build_vae().train()
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(cfg.seed)
    bar = tqdm(range(cfg.vae_steps), desc="vae", leave=False)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = _lr(step, cfg.vae_steps, cfg.vae_lr)
        x = images[torch.randint(len(images), (cfg.vae_batch,), generator=gen)]
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample(generator=gen)).sample
        # A small KL keeps the latent space smooth without costing reconstruction.
        loss = F.mse_loss(rec, x) + 1e-6 * post.kl().mean()
        _check(loss, "vae", step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
    vae.eval()
    with torch.no_grad():
        held = images[:512]
        rec = vae.decode(vae.encode(held).latent_dist.mode()).sample.clamp(-1, 1)
        mse = F.mse_loss((rec + 1) / 2, (held + 1) / 2).item()
        lat = torch.cat(
            [
                vae.encode(images[i : i + 256]).latent_dist.mode()
                for i in range(0, min(1024, len(images)), 256)
            ]
        )
    psnr = 10 * math.log10(1.0 / mse)
    # Unit-variance latents, as Stable Diffusion's scaling factor gives its UNet.
    vae.register_to_config(scaling_factor=float(1.0 / lat.std()))
    log["vae"] = {"psnr_db": round(psnr, 2), "scaling_factor": vae.config.scaling_factor}
    return vae, psnr


# 2. CLIP ----------------------------------------------------------------------------------------
def _clip_caption(color: str, shape: str, style: str, rng: np.random.Generator) -> tuple[str, tuple]:
    """A caption for contrastive training and the attributes it names (None = not named)."""
    form = rng.random()
    st = style if (style != "plain" or rng.random() < 0.5) and rng.random() < 0.7 else None
    templates = TRAIN_TEMPLATES + HELDOUT_TEMPLATES
    t = templates[rng.integers(len(templates))]
    if form < 0.45:
        named = (color, shape, st)
    elif form < 0.65:
        named = (color, None, st if rng.random() < 0.3 else None)
    elif form < 0.85:
        named = (None, shape, st if rng.random() < 0.3 else None)
    else:
        named = (None, None, style)
    if named[0] is None and named[1] is None:
        text = f"a shape in {style} style"
    else:
        text = caption(named[0], named[1], named[2], t if named[0] else "a {c} {s}")
    # "plain" left unsaid is still consistent with any style; said, it must match.
    return text, named


def train_clip(cfg: ToyTrainConfig, images: np.ndarray, attrs: list[tuple], oc_tok, log):
    torch.manual_seed(cfg.seed + 1)
    clip = nets.build_clip(oc_tok.vocab_size).train()
    mean = torch.tensor(nets.IMAGE_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(nets.IMAGE_STD).view(1, 3, 1, 1)
    pix = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - mean) / std
    opt = torch.optim.AdamW(clip.parameters(), lr=cfg.clip_lr, weight_decay=0.05)
    rng = np.random.default_rng([cfg.seed, 7])
    bar = tqdm(range(cfg.clip_steps), desc="clip", leave=False)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = _lr(step, cfg.clip_steps, cfg.clip_lr)
        idx = rng.integers(len(images), size=cfg.clip_batch)
        caps = [_clip_caption(*attrs[i], rng) for i in idx]
        # Soft targets: an image matches every caption in the batch whose named attributes it has,
        # so "a red shape" is not pushed away from a second red image (plain CLIP loss would).
        img_attrs = [attrs[i] for i in idx]
        match = torch.tensor(
            [[all(n is None or n == a for n, a in zip(named, ia)) for _, named in caps] for ia in img_attrs],
            dtype=torch.float32,
        )
        img_f = F.normalize(clip.encode_image(pix[idx]), dim=-1)
        txt_f = F.normalize(clip.encode_text(oc_tok([c for c, _ in caps])), dim=-1)
        logits = clip.logit_scale.exp().clamp(max=100) * img_f @ txt_f.T
        loss = 0.5 * (
            -(F.log_softmax(logits, 1) * match / match.sum(1, keepdim=True)).sum(1).mean()
            - (F.log_softmax(logits, 0) * match / match.sum(0, keepdim=True)).sum(0).mean()
        )
        _check(loss, "clip", step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    return clip.eval()


@torch.no_grad()
def clip_accuracy(clip, oc_tok, seed: int, n_per: int = 8) -> dict[str, float]:
    """Zero-shot accuracy of the toy CLIP per axis on freshly rendered images (unseen seeds)."""
    from erase.judges.clip import ZeroShotClassifier
    from erase.toy.world import render_spec

    rng = np.random.default_rng([seed, 99])
    combos = [(c, s, st) for c in AXES["color"] for s in AXES["shape"] for st in STYLES]
    specs = [combo for combo in combos for _ in range(n_per)]
    ims = [render_spec(*spec, rng) for spec in specs]
    out = {}
    from erase.concepts import load_concepts

    book = load_concepts("toy")
    for k, axis in enumerate(("color", "shape", "style")):
        clf = ZeroShotClassifier.build(clip, oc_tok, book.groups[axis], preprocess=None)
        pred = clf.predict(ims)
        out[axis] = float(np.mean([p == spec[k] for p, spec in zip(pred, specs)]))
    return out


# 3. UNet ----------------------------------------------------------------------------------------
def train_unet(cfg: ToyTrainConfig, samples, images: torch.Tensor, vae, text_encoder, tokenizer, log):
    torch.manual_seed(cfg.seed + 2)
    unet = nets.build_unet().train()
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    sched = nets.train_scheduler()
    with torch.no_grad():
        # Latent distributions and text embeddings are fixed: compute them once, sample per step.
        dists = [vae.encode(images[i : i + 256]).latent_dist for i in range(0, len(images), 256)]
        mu = torch.cat([d.mean for d in dists])
        sigma = torch.cat([d.std for d in dists])
        texts = sorted({s.caption for s in samples} | {""})
        ids = tokenizer(
            texts,
            padding="max_length",
            max_length=tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        emb = text_encoder(ids).last_hidden_state
    text_index = {t: i for i, t in enumerate(texts)}
    cap_idx = torch.tensor([text_index[s.caption] for s in samples])
    empty = text_index[""]
    scale = vae.config.scaling_factor
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.unet_lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(cfg.seed + 3)
    bar = tqdm(range(cfg.unet_steps), desc="unet", leave=False)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = _lr(step, cfg.unet_steps, cfg.unet_lr)
        idx = torch.randint(len(samples), (cfg.unet_batch,), generator=gen)
        z = (mu[idx] + sigma[idx] * torch.randn(mu[idx].shape, generator=gen)) * scale
        drop = torch.rand(cfg.unet_batch, generator=gen) < cfg.cfg_dropout
        cond = emb[torch.where(drop, torch.full_like(idx, empty), cap_idx[idx])]
        from erase.diffusion import diffusion_loss

        loss = diffusion_loss(unet, sched, z, cond, generator=gen, snr_gamma=cfg.snr_gamma)
        _check(loss, "unet", step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            # Warm the EMA up quickly so short runs (tests) still get a usable average.
            d = min(cfg.unet_ema, (1 + step) / (10 + step))
            for pe, p in zip(ema.parameters(), unet.parameters()):
                pe.lerp_(p, 1 - d)
        bar.set_postfix(loss=f"{loss.item():.4f}")
    log["unet"] = {"final_loss": round(loss.item(), 4), "train_samples": len(samples)}
    return ema


# Orchestration ----------------------------------------------------------------------------------
def train_toy(cfg: ToyTrainConfig, out: Path, base: Path | None = None) -> dict:
    """Train the stages in ``cfg.stages`` (loading the rest from ``base``), save, return the manifest."""
    from diffusers import StableDiffusionPipeline

    from erase.io import atomic_dir

    torch.set_num_threads(cfg.threads)
    t0 = time.time()
    world = World(seed=cfg.seed, size=cfg.world_size)
    unet_samples = select(world, cfg.exclude, cfg.exclude_ids)
    all_samples = world.samples()
    if set(cfg.stages) != set(STAGES):
        from erase.toy import WEIGHTS

        base = Path(base or WEIGHTS)
        if not (base / "pipeline" / "model_index.json").is_file():
            raise EraseError(
                f"toy training: base {base} has no trained toy world to reuse; "
                "train every stage or pass --base FOLDER"
            )
    log: dict = {}
    print(f"rendering {world.size} samples (seed {cfg.seed}); the UNet trains on {len(unet_samples)}")
    raw = render_batch(all_samples)
    images = to_tensor(raw)

    merges = learn_merges(world_words())
    tokenizer = hf_tokenizer(merges)
    with atomic_dir(out) as tmp:
        (tmp / "clip").mkdir()
        bpe = tmp / "clip" / "bpe_vocab.txt.gz"
        write_bpe(merges, bpe)
        oc_tok = open_clip_tokenizer(bpe)

        if "vae" in cfg.stages:
            vae, psnr = train_vae(cfg, images, log)
            print(f"vae: {psnr:.1f} dB reconstruction PSNR")
        else:
            from diffusers import AutoencoderKL

            vae = AutoencoderKL.from_pretrained(base / "pipeline" / "vae")
        if "clip" in cfg.stages:
            attrs = [(s.color, s.shape, s.style) for s in all_samples]
            clip = train_clip(cfg, raw, attrs, oc_tok, log)
        else:
            from erase.judges.clip import load_toy_clip

            clip, _, _ = load_toy_clip(base / "clip")
        _save_clip(clip, oc_tok.vocab_size, tmp / "clip")
        log["clip"] = {"zero_shot_accuracy": clip_accuracy(clip, oc_tok, cfg.seed)}
        print(f"clip: zero-shot accuracy on fresh renders {log['clip']['zero_shot_accuracy']}")
        text_encoder = nets.clip_text_to_hf(clip, tokenizer.eos_token_id, tokenizer.bos_token_id)

        if "unet" in cfg.stages:
            unet = train_unet(
                cfg, unet_samples, images[[s.id for s in unet_samples]], vae, text_encoder, tokenizer, log
            )
        else:
            from diffusers import UNet2DConditionModel

            unet = UNet2DConditionModel.from_pretrained(base / "pipeline" / "unet")
        pipe = StableDiffusionPipeline(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=nets.sample_scheduler(),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.save_pretrained(tmp / "pipeline", safe_serialization=True)
        manifest = {
            "what": "erase toy world: a tiny Stable Diffusion pipeline and OpenCLIP judge",
            "config": asdict(cfg),
            "data": {
                "world_seed": cfg.seed,
                "world_size": cfg.world_size,
                "unet_train_samples": len(unet_samples),
                "axes": {k: list(v) for k, v in AXES.items()},
                "train_templates": list(TRAIN_TEMPLATES),
                "heldout_templates": list(HELDOUT_TEMPLATES),
            },
            "parameters": {
                "unet": sum(p.numel() for p in unet.parameters()),
                "vae": sum(p.numel() for p in vae.parameters()),
                "clip": sum(p.numel() for p in clip.parameters()),
            },
            "metrics": log,
            "train_seconds": round(time.time() - t0, 1),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _save_clip(clip, vocab: int, folder: Path) -> None:
    from safetensors.torch import save_file

    cfg = {
        "model_cfg": nets.clip_model_cfg(vocab),
        "preprocess_cfg": {
            "mean": list(nets.IMAGE_MEAN),
            "std": list(nets.IMAGE_STD),
            "interpolation": "bicubic",
            "resize_mode": "shortest",
        },
    }
    (folder / "open_clip_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    save_file(
        {k: v.contiguous() for k, v in clip.state_dict().items()}, str(folder / "open_clip_model.safetensors")
    )
