"""Data-level untraining: run a method on forget/retain sets and score it against its oracle.

Untraining asks to undo the training on specific samples, so its ideal result is the model
retrained without them (the untraining oracle), not a model that cannot draw their concept: a
small forget set of red circles should leave an oracle that still draws red circles (seed 000).
Every metric here is therefore reported for the original model, the edited one and the oracle,
on the same noise and timesteps (common random numbers, so differences are not sampling noise):

- forget loss and its gap to held-out samples of the same concepts (never trained on): a model
  that memorised the forget set has a lower loss there; the oracle's gap is the target;
- a loss-threshold membership-inference AUC, forget (members) against held-out (non-members):
  0.5 means the forget samples look unseen, as they are to the oracle;
- the distance of the edited model's noise predictions to the oracle's on the forget set, next to
  the original's distance (seed 003: ascent can end farther from the oracle than doing nothing);
- the retain loss (utility on what should be kept).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from erase.data import EncodedSet, ImageSet, encode_set
from erase.diffusion import predict, target_for


@dataclass
class Probe:
    """Fixed noise and timesteps for one encoded set: every model is measured on the same ones."""

    enc: EncodedSet
    noise: torch.Tensor  # (repeats, n, C, H, W)
    t: torch.Tensor  # (repeats, n)

    @classmethod
    def make(cls, enc: EncodedSet, scheduler, *, seed: int, repeats: int = 8) -> Probe:
        g = torch.Generator().manual_seed(seed)
        n, T = len(enc), scheduler.config.num_train_timesteps
        noise = torch.randn((repeats, *enc.latents.shape), generator=g).to(enc.latents)
        # Stratified timesteps: every repeat covers the whole schedule once per sample.
        base = (torch.arange(repeats) + torch.rand(repeats, n, generator=g).T).T / repeats
        t = (base * T).long().clamp(max=T - 1).to(enc.latents.device)
        return cls(enc, noise, t)

    @torch.no_grad()
    def predictions(self, unet, scheduler, batch: int = 64) -> torch.Tensor:
        out = torch.empty_like(self.noise)
        for r in range(len(self.noise)):
            for i in range(0, len(self.enc), batch):
                sl = slice(i, i + batch)
                x_t = scheduler.add_noise(self.enc.latents[sl], self.noise[r, sl], self.t[r, sl])
                out[r, sl] = predict(unet, x_t, self.t[r, sl], self.enc.cond[sl]).to(out)
        return out

    @torch.no_grad()
    def losses(self, unet, scheduler, preds: torch.Tensor | None = None) -> torch.Tensor:
        """Per-sample denoising loss, averaged over the repeats."""
        preds = self.predictions(unet, scheduler) if preds is None else preds
        per = []
        for r in range(len(self.noise)):
            target = target_for(scheduler, self.enc.latents, self.noise[r], self.t[r])
            per.append(((preds[r].float() - target.float()) ** 2).mean(dim=(1, 2, 3)))
        return torch.stack(per).mean(0)


def mia_auc(members: torch.Tensor, nonmembers: torch.Tensor) -> float:
    """AUC of "lower loss means trained on": P(member loss < non-member loss), ties half."""
    m, n = members.double()[:, None], nonmembers.double()[None, :]
    return float(((m < n).double() + 0.5 * (m == n).double()).mean())


def measure(unet, scheduler, probes: dict[str, Probe], oracle_preds: torch.Tensor | None) -> dict:
    """The untraining metrics of one model (see the module docstring)."""
    preds = probes["forget"].predictions(unet, scheduler)
    forget = probes["forget"].losses(unet, scheduler, preds)
    out = {"forget_loss": float(forget.mean())}
    if "heldout" in probes:
        held = probes["heldout"].losses(unet, scheduler)
        out["heldout_loss"] = float(held.mean())
        out["loss_gap"] = out["forget_loss"] - out["heldout_loss"]
        out["mia_auc"] = mia_auc(forget, held)
    if "retain" in probes:
        out["retain_loss"] = float(probes["retain"].losses(unet, scheduler).mean())
    if oracle_preds is not None:
        out["distance_to_oracle"] = float(((preds.float() - oracle_preds.float()) ** 2).mean())
    return out


def heldout_twins(ids: list[int], world=None) -> list[int]:
    """For toy training ids, samples of the same colour, shape and style that were never trained
    on: the world's ids past its training size repeat its combinations in the same order."""
    from erase.toy.world import World

    world = world or World()
    return [i + world.size for i in ids]


def make_probes(
    pipe, forget: ImageSet, retain: ImageSet | None, *, seed: int, repeats: int = 8, limit: int = 256
) -> dict[str, Probe]:
    """Probes on the forget set, on its never-trained twins when it is a toy set (their ids are
    known), and on the retain set; each set on its own fixed noise.

    A set larger than ``limit`` is measured on a seeded subset of that size: a whole toy concept
    (1,200 samples) at 8 repeats costs minutes per model on a CPU, and 256 samples already put
    the mean loss within a few per cent.
    """
    sched = pipe.scheduler
    forget = subset(forget, limit, seed)
    retain = subset(retain, limit, seed + 2) if retain is not None else None
    probes = {
        "forget": Probe.make(encode_set(pipe, forget, "forget example"), sched, seed=seed, repeats=repeats)
    }
    if forget.ids:
        from erase.data import toy_set
        from erase.toy.world import World

        twins = toy_set(heldout_twins(list(forget.ids)), World(size=2 * World().size))
        probes["heldout"] = Probe.make(
            encode_set(pipe, twins, "held-out example"), sched, seed=seed + 1, repeats=repeats
        )
    if retain is not None:
        probes["retain"] = Probe.make(
            encode_set(pipe, retain, "retain example"), sched, seed=seed + 2, repeats=repeats
        )
    return probes


def subset(pairs: ImageSet, limit: int, seed: int) -> ImageSet:
    """At most ``limit`` pairs of a set, drawn with ``seed``; the set itself when it is small enough."""
    if len(pairs.images) <= limit:
        return pairs
    keep = sorted(np.random.default_rng([seed, 11]).choice(len(pairs.images), limit, replace=False).tolist())
    return ImageSet(
        tuple(pairs.images[i] for i in keep),
        tuple(pairs.prompts[i] for i in keep),
        tuple(pairs.ids[i] for i in keep) if pairs.ids else None,
    )


def oracle_kind(spec: str | None) -> str | None:
    """The problem an oracle model is the ideal answer to (``untraining``: retrained without the
    forget samples; ``unlearning``: without every sample of a concept), read from its delta's
    record; None when the spec is not a computed oracle."""
    from erase.delta import read_meta, split_spec

    if not spec:
        return None
    _, delta = split_spec(spec)
    if delta is None:
        return None
    meta = read_meta(delta)
    return meta.get("kind") if meta.get("method") == "retrain" else None


def describe_oracle(kind: str, oracle: str | None, oracle_kind: str | None) -> str:
    """The report's first line: the declared kind, the oracle and which problem it answers."""
    if not oracle:
        return f"declared kind: {kind}; oracle: none (scores without the ideal reference)"
    line = f"declared kind: {kind}; oracle: {oracle}"
    if oracle_kind:
        line += f" ({oracle_kind} oracle)"
    if kind == "untraining" and oracle_kind == "unlearning":
        # Removing every sample of a concept is both problems at once: the two ideals coincide.
        line += (
            "; the forget set is every training sample of a concept, so its untraining oracle is the "
            "unlearning oracle, the model retrained without any of them"
        )
    return line


def format_report(
    rows: dict[str, dict], kind: str, oracle: str | None, oracle_kind: str | None = None
) -> str:
    """The terminal table: one row per model, one column per metric."""
    cols = ["forget_loss", "heldout_loss", "loss_gap", "mia_auc", "distance_to_oracle", "retain_loss"]
    cols = [c for c in cols if any(c in r for r in rows.values())]
    head = f"{'model':<10}" + "".join(f"{c:>19}" for c in cols)
    lines = [describe_oracle(kind, oracle, oracle_kind), head]
    for name, r in rows.items():
        lines.append(f"{name:<10}" + "".join(f"{r[c]:>19.4f}" if c in r else f"{'-':>19}" for c in cols))
    return "\n".join(lines)


def nearest_note(rows: dict[str, dict]) -> str | None:
    """One sentence on whether the edit moved toward the oracle or away from it."""
    if "oracle" not in rows or "distance_to_oracle" not in rows.get("edited", {}):
        return None
    a, b = rows["original"]["distance_to_oracle"], rows["edited"]["distance_to_oracle"]
    ratio = b / a if a > 0 else float("inf")
    way = "closer to" if b < a else "farther from"
    return f"the edit ended {way} the oracle than the original was ({b:.4g} vs {a:.4g}, {ratio:.2f}x)"


def summarize_kappa(kappas: list[float]) -> dict:
    if not kappas:
        return {}
    k = np.asarray(kappas)
    return {"mean": float(k.mean()), "first": float(k[0]), "last": float(k[-1]), "max": float(k.max())}
