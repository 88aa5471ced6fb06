"""Rates with their counts and intervals that a reviewer accepts.

A judge's accuracy is a count: ``k`` of ``n`` images showed the concept. Its interval is Wilson's
score interval, which (unlike a percentile bootstrap over images) is never degenerate: 0/24 gives
[0.00, 0.14], not [0.00, 0.00], and 24/24 gives [0.86, 1.00]. Its coverage is close to the nominal
95% over the whole range (``tests/test_stats.py`` simulates it).

It treats the ``n`` images as independent. Images of one prompt under different seeds are not
quite (the prompt decides much of what is drawn), so with few prompts the interval is optimistic;
``prompt_bootstrap`` resamples prompts and then seeds within them, for a reader who wants the
interval that respects that structure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval for ``k`` successes in ``n`` trials."""
    if n <= 0:
        return (0.0, 1.0)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At k = 0 (k = n) the bound is exactly 0 (1); say so rather than leave a rounding residue.
    return (0.0 if k == 0 else max(0.0, centre - half), 1.0 if k == n else min(1.0, centre + half))


def rate(k: int, n: int) -> str:
    """``"3/72 = 0.04 [0.01, 0.12]"``: the count, the rate and its Wilson interval."""
    lo, hi = wilson(k, n)
    return f"{k}/{n} = {k / n if n else float('nan'):.2f} [{lo:.2f}, {hi:.2f}]"


def shown(res: dict | None) -> str:
    """A result with ``hits`` and ``n`` as ``rate`` writes it, or "-" for one not measured."""
    return "-" if res is None else rate(res["hits"], res["n"])


def prompt_bootstrap(
    hits: Sequence[Sequence[float]], *, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of the mean of ``hits[prompt][seed]`` (0/1), resampling prompts and then,
    within each drawn prompt, its seeds: the two levels at which the images were drawn."""
    h = np.asarray(hits, dtype=float)
    rng = np.random.default_rng(seed)
    p, s = h.shape
    rows = rng.integers(p, size=(n_boot, p))
    cols = rng.integers(s, size=(n_boot, p, s))
    means = h[rows[..., None], cols].mean(axis=(1, 2))
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)
