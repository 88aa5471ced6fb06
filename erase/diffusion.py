"""The diffusion maths every stage shares: noise latents, predict, target, loss.

Training the toy world, every fine-tuning erasure method and the relearning attack all call
``diffusion_loss``; it is an experimental control, so there is exactly one copy of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def sample_timesteps(
    scheduler, n: int, generator: torch.Generator | None, device, low: int = 0
) -> torch.Tensor:
    """Uniform training timesteps ``t ~ U{low..T-1}`` (``low`` 0: all of them)."""
    T = scheduler.config.num_train_timesteps
    return torch.randint(low, T, (n,), generator=generator).to(device)


def target_for(scheduler, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the UNet should predict under the scheduler's parameterisation."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, t)
    raise ValueError(f"unsupported prediction_type {kind!r}")


def diffusion_loss(
    unet,
    scheduler,
    latents: torch.Tensor,
    cond: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    timesteps: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    added_cond_kwargs: dict | None = None,
    reduction: str = "mean",
    snr_gamma: float | None = None,
) -> torch.Tensor:
    """``E ||target - unet(x_t, c, t)||^2`` with ``x_t`` noised from clean ``latents``.

    ``reduction="none"`` returns one loss per sample (membership inference and forget-loss gaps
    need per-sample values). ``snr_gamma`` applies Min-SNR weighting (Hang et al. 2023), which
    stops easy low-noise steps from dominating training; erasure and relearning leave it off so
    that they optimise the plain objective.
    """
    n = latents.shape[0]
    if noise is None:
        noise = torch.randn(latents.shape, generator=generator).to(latents)
    if timesteps is None:
        timesteps = sample_timesteps(scheduler, n, generator, latents.device)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    pred = unet(noisy, timesteps, cond, added_cond_kwargs=added_cond_kwargs).sample
    target = target_for(scheduler, latents, noise, timesteps)
    loss = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    if snr_gamma is not None:
        ac = scheduler.alphas_cumprod.to(latents.device)[timesteps].float()
        snr = ac / (1 - ac)
        weight = snr.clamp(max=snr_gamma) / snr
        if scheduler.config.prediction_type == "v_prediction":
            weight = snr.clamp(max=snr_gamma) / (snr + 1)
        loss = loss * weight
    return loss.mean() if reduction == "mean" else loss


def regress_onto(
    unet, x_t: torch.Tensor, t: torch.Tensor, cond, target: torch.Tensor, *, per_sample: bool = False
):
    """``||unet(x_t, c, t) - target||^2`` onto a frozen target (a prediction of the frozen model,
    or of this one under ``torch.no_grad``): the loss of ESD, CA's model-based variant and its
    preserve term, and RL. ``per_sample`` returns one value per sample, else their mean."""
    pred = predict(unet, x_t, t, cond).float()
    if per_sample:
        return (pred - target.float()).pow(2).mean(dim=(1, 2, 3))
    return F.mse_loss(pred, target.float())


# Conditioning -------------------------------------------------------------------------------------
@dataclass
class Conditioning:
    """Text conditioning for a batch: token embeddings, plus SDXL's pooled text and time ids.

    Indexing and ``cat`` keep the parts aligned, so methods never special-case SDXL.
    """

    embeds: torch.Tensor  # (B, tokens, cross_attention_dim)
    text_embeds: torch.Tensor | None = None  # SDXL pooled embeddings (B, proj_dim)
    time_ids: torch.Tensor | None = None  # SDXL (B, 6)

    def __len__(self) -> int:
        return self.embeds.shape[0]

    def __getitem__(self, idx) -> Conditioning:
        def pick(t):
            if t is None:
                return None
            return t[idx] if not isinstance(idx, int) else t[idx : idx + 1]

        return Conditioning(pick(self.embeds), pick(self.text_embeds), pick(self.time_ids))

    @staticmethod
    def cat(parts: list[Conditioning]) -> Conditioning:
        first = parts[0]
        return Conditioning(
            torch.cat([p.embeds for p in parts]),
            None if first.text_embeds is None else torch.cat([p.text_embeds for p in parts]),
            None if first.time_ids is None else torch.cat([p.time_ids for p in parts]),
        )

    def repeat(self, n: int) -> Conditioning:
        return Conditioning.cat([self] * n) if n > 1 else self

    @property
    def added(self) -> dict | None:
        if self.text_embeds is None:
            return None
        return {"text_embeds": self.text_embeds, "time_ids": self.time_ids}

    def to(self, device=None, dtype=None) -> Conditioning:
        def mv(t):
            return None if t is None else t.to(device=device, dtype=dtype)

        return Conditioning(mv(self.embeds), mv(self.text_embeds), mv(self.time_ids))


def encode_prompts(pipe, prompts: list[str], *, grad: bool = False) -> Conditioning:
    """Encode prompts with the pipeline's own text encoder(s), as its ``__call__`` would; with
    ``grad`` the result carries gradients back to the encoders (an attack training a token)."""
    from erase.tokens import check_pipeline_prompts

    check_pipeline_prompts(pipe, prompts)
    with torch.set_grad_enabled(grad):
        return _encode(pipe, prompts)


def _encode(pipe, prompts: list[str]) -> Conditioning:
    device = pipe.device
    if hasattr(pipe, "text_encoder_2"):  # SDXL: two encoders, pooled text and size conditioning
        embeds, _, pooled, _ = pipe.encode_prompt(
            list(prompts), device=device, do_classifier_free_guidance=False
        )
        size = pipe.unet.config.sample_size * pipe.vae_scale_factor
        proj = pipe.text_encoder_2.config.projection_dim
        time_ids = pipe._get_add_time_ids((size, size), (0, 0), (size, size), embeds.dtype, proj)
        return Conditioning(embeds, pooled, time_ids.to(device).repeat(len(prompts), 1))
    embeds, _ = pipe.encode_prompt(
        list(prompts), device, num_images_per_prompt=1, do_classifier_free_guidance=False
    )
    return Conditioning(embeds)


def predict(unet, x: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
    """The UNet's prediction; ``t`` may be a scalar or one timestep per sample."""
    if t.ndim == 0:
        t = t.expand(x.shape[0])
    return unet(x, t, cond.embeds, added_cond_kwargs=cond.added).sample


def latent_shape(pipe, n: int) -> tuple[int, ...]:
    size = pipe.unet.config.sample_size
    return (n, pipe.unet.config.in_channels, size, size)


@dataclass
class Trajectories:
    """States ``x_t`` visited by guided DDIM sampling, with the frozen model's predictions there.

    ``preds[:, :, k]`` is the frozen prediction under ``conds[k]`` (index 0: unconditional) at every
    recorded state, and ``preds[:, :, -1]`` the prediction under the trajectory's own prompt.
    """

    latents: torch.Tensor  # (steps, n, C, H, W): x_t before each denoising step
    timesteps: torch.Tensor  # (steps,)
    preds: torch.Tensor  # (steps, n, len(conds) + 1, C, H, W)


@torch.no_grad()
def sample_trajectories(
    pipe,
    unet,
    prompt_cond: Conditioning,
    conds: list[Conditioning],
    *,
    steps: int,
    guidance: float,
    generator: torch.Generator,
    stop_at: int | None = None,
    predict_last: bool = True,
) -> Trajectories:
    """Guided DDIM sampling of ``prompt_cond`` (one row per trajectory), recording every state.

    ``conds[0]`` must be the unconditional embedding (used for guidance); every ``conds[k]`` (one
    row, broadcast over trajectories, or one row per trajectory) is evaluated at each state in the
    same batched UNet call, so the predictions a method needs come free with the sampling.
    ``stop_at`` ends early (the partial trajectory of the authors' ESD): the state at step
    ``stop_at`` is the last recorded; with ``predict_last`` False it is not predicted at (a caller
    that wants another model's predictions there saves a call), so ``preds`` has one row fewer.
    """
    from diffusers import DDIMScheduler

    sched = DDIMScheduler.from_config(pipe.scheduler.config)
    sched.set_timesteps(steps)
    n = len(prompt_cond)
    device, dtype = pipe.device, pipe.unet.dtype
    x = torch.randn(latent_shape(pipe, n), generator=generator).to(device, dtype)
    x = x * sched.init_noise_sigma
    # One call per step: [cond_0 .. cond_{K-1}] x n, then the prompt itself x n.
    batch = Conditioning.cat([c.repeat(n) if len(c) == 1 else c for c in conds] + [prompt_cond])
    batch = batch.to(device, dtype)
    k = len(conds)
    lat, ts, preds = [], [], []
    for i, t in enumerate(sched.timesteps):
        if i == stop_at and not predict_last:
            lat.append(x)
            ts.append(t)
            break
        out = predict(unet, x.repeat(k + 1, 1, 1, 1), t.to(device), batch)
        out = out.view(k + 1, n, *x.shape[1:])
        lat.append(x)
        ts.append(t)
        preds.append(out.transpose(0, 1))
        if stop_at is not None and i >= stop_at:
            break
        guided = out[0] + guidance * (out[k] - out[0])
        x = sched.step(guided, t, x).prev_sample
    preds = torch.stack(preds) if preds else torch.empty(0, n, k + 1, *x.shape[1:])
    return Trajectories(torch.stack(lat), torch.stack(ts), preds)


@dataclass
class StateBank:
    """Recorded states of sampled trajectories, flattened to (steps * n), with what the edited UNet
    should predict at each."""

    x: torch.Tensor
    t: torch.Tensor
    cond_index: torch.Tensor  # which prompt each state belongs to
    target: torch.Tensor

    def draw(self, k: int, gen: torch.Generator) -> tuple:
        idx = torch.randint(len(self.x), (k,), generator=gen)
        return self.x[idx], self.t[idx], self.cond_index[idx], self.target[idx]


def state_bank(
    pipe,
    prompts: Conditioning,
    uncond: Conditioning,
    *,
    trajectories: int,
    steps: int,
    guidance: float,
    generator: torch.Generator,
    anchors: Conditioning | None = None,
    eta: float | None = None,
) -> StateBank:
    """Sample ``trajectories`` guided trajectories per prompt from ``pipe.unet`` (the frozen model:
    call it before training), all in one batch, and record a regression target at every state.

    ``eta`` None: the frozen prediction for the prompt itself (a preserve target: "predict what you
    predicted before"). ``eta`` given: ESD's target, negative guidance away from the prompt, towards
    its anchor (one per prompt) or, without anchors, the empty prompt.
    """
    which = torch.arange(len(prompts)).repeat_interleave(trajectories)  # trajectory -> prompt
    conds = [uncond] if anchors is None else [uncond, anchors[which]]
    tr = sample_trajectories(
        pipe, pipe.unet, prompts[which], conds, steps=steps, guidance=guidance, generator=generator
    )
    n_steps, n = tr.latents.shape[:2]
    target = tr.preds[:, :, -1] if eta is None else negative_guidance(tr.preds, eta)
    return StateBank(
        x=tr.latents.flatten(0, 1),
        t=tr.timesteps.repeat_interleave(n),
        cond_index=which.repeat(n_steps),
        target=target.flatten(0, 1),
    )


def negative_guidance(preds: torch.Tensor, eta: float) -> torch.Tensor:
    """ESD's target from frozen predictions stacked on dim -4 as ``[uncond, (anchor,) prompt]``:
    ``base - eta * (prompt - base)``, the base being the anchor when there is one, else the
    unconditional prediction."""
    own, base = preds.select(-4, -1), preds.select(-4, 1 if preds.shape[-4] == 3 else 0)
    return base - eta * (own - base)


class FrozenView:
    """The model as it was when this view was made, without a second copy of it: only the tensors
    in ``names`` (those being trained) are cloned, and calls go through
    ``torch.func.functional_call`` with those clones in place of the live parameters. Call it like
    the module (``predict(view, ...)`` works)."""

    def __init__(self, module: torch.nn.Module, names):
        self.module = module
        live = dict(module.named_parameters())
        self.values = {n: live[n].detach().clone() for n in names}

    @torch.no_grad()
    def __call__(self, *args, **kwargs):
        return torch.func.functional_call(self.module, self.values, args, kwargs)


@dataclass
class FreshStates:
    """ESD's states as its authors sample them: every draw runs a guided DDIM trajectory of the
    model *being trained* (``pipe.unet`` now) from fresh noise down to a uniformly drawn step, and
    the target comes from the frozen model (``frozen``) at the state reached. The draws of one call
    share their stop step, so they run as one batch. The training timestep is that state's own
    DDIM timestep, as in ``StateBank``; the authors draw a timestep within its band of the 1000
    (a difference both samplings share, so that they differ only in where ``x_t`` comes from).

    Same interface as ``StateBank``: ``draw(k, gen) -> (x, t, cond_index, target)``.
    """

    pipe: object
    prompts: Conditioning
    uncond: Conditioning
    frozen: FrozenView
    steps: int
    guidance: float
    eta: float
    anchors: Conditioning | None = None

    def draw(self, k: int, gen: torch.Generator) -> tuple:
        ci = torch.randint(len(self.prompts), (k,), generator=gen)
        stop = int(torch.randint(self.steps, (1,), generator=gen))
        prompts = self.prompts[ci]
        tr = sample_trajectories(
            self.pipe,
            self.pipe.unet,
            prompts,
            [self.uncond],
            steps=self.steps,
            guidance=self.guidance,
            generator=gen,
            stop_at=stop,
            predict_last=False,  # the frozen model predicts there, below
        )
        x, t = tr.latents[-1], tr.timesteps[-1]
        conds = [self.uncond.repeat(k)] + ([] if self.anchors is None else [self.anchors[ci]])
        batch = Conditioning.cat([*conds, prompts]).to(x.device, x.dtype)
        preds = predict(self.frozen, x.repeat(len(conds) + 1, 1, 1, 1), t.to(x.device), batch)
        preds = preds.view(len(conds) + 1, k, *x.shape[1:]).transpose(0, 1)
        return x, t.expand(k), ci, negative_guidance(preds, self.eta)
