"""How far apart two sets of images are as distributions: CMMD, and FID through torchmetrics.

CMMD (Jayasumana et al., 2024, "Rethinking FID") is the maximum mean discrepancy between the two
sets' CLIP image embeddings (L2-normalised) under a Gaussian RBF kernel with sigma 10, times 1000,
with the reference implementation's estimator (means over all pairs, the diagonal included), so that
numbers compare with published ones. It needs no Inception weights: the judge's own image encoder
gives the embeddings. That estimator is not zero for two samples of one distribution (its diagonal
terms add about 1/n), so every value comes with a permutation null: the same statistic for random
splits of the pooled embeddings. A value inside the null's 95% range is "no difference within noise".

FID is torchmetrics' ``FrechetInceptionDistance`` (an optional extra: ``pip install erase[fid]``),
with its Inception weights for users who have them, or any feature extractor passed in.
"""

from __future__ import annotations

import torch

SIGMA = 10.0  # the reference bandwidth
SCALE = 1000.0  # the reference scale, "to make the numbers human readable"


def mmd(x: torch.Tensor, y: torch.Tensor, sigma: float = SIGMA, scale: float = SCALE) -> float:
    """CMMD's statistic between embeddings ``x`` (n x d) and ``y`` (m x d)."""
    x, y = x.double(), y.double()
    gamma = 1.0 / (2 * sigma**2)

    def k(a, b):
        return torch.exp(-gamma * torch.cdist(a, b).pow(2)).mean()

    return float(scale * (k(x, x) + k(y, y) - 2 * k(x, y)))


def cmmd(x: torch.Tensor, y: torch.Tensor, *, permutations: int = 500, seed: int = 0) -> dict:
    """CMMD of two embedding sets with its permutation null: the null's 95th percentile and the share
    of random splits at least as far apart (the p-value, with the observed split counted)."""
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"CMMD needs at least 2 images a side, got {len(x)} and {len(y)}")
    value = mmd(x, y)
    pooled = torch.cat([x, y])
    gen = torch.Generator().manual_seed(seed)
    null = []
    for _ in range(permutations):
        idx = torch.randperm(len(pooled), generator=gen)
        null.append(mmd(pooled[idx[: len(x)]], pooled[idx[len(x) :]]))
    null_t = torch.tensor(null)
    return {
        "cmmd": value,
        "null_95": float(torch.quantile(null_t, 0.95)),
        "p_value": (1 + int((null_t >= value).sum())) / (1 + permutations),
        "n": [len(x), len(y)],
        "permutations": permutations,
        "seed": seed,
    }


def fid(real, fake, *, feature=2048) -> float:
    """FID between two image sets (uint8 tensors N x 3 x H x W) by torchmetrics; ``feature``: an
    Inception feature layer (needs torchmetrics' Inception weights) or a module mapping such a batch to
    N x d features."""
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except ImportError:
        from erase.errors import EraseError

        raise EraseError(
            "FID needs torchmetrics: pip install 'erase[fid]' (CMMD needs nothing more)"
        ) from None
    metric = FrechetInceptionDistance(feature=feature, normalize=False)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    return float(metric.compute())
