"""The intervals every reported rate carries: right coverage, never zero width."""

from __future__ import annotations

import numpy as np
import pytest

from erase.stats import prompt_bootstrap, rate, wilson


def test_wilson_covers_the_true_rate_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    coverage = {}
    for n in (24, 72, 288):
        for p in np.linspace(0.05, 0.95, 19):
            ks = rng.binomial(n, p, size=4000)
            ci = np.array([wilson(int(k), n) for k in ks])
            coverage[(n, round(p, 2))] = float(((ci[:, 0] <= p) & (p <= ci[:, 1])).mean())
    values = np.array(list(coverage.values()))
    assert 0.94 <= values.mean() <= 0.96, coverage
    assert values.min() >= 0.88, min(coverage.items(), key=lambda kv: kv[1])


@pytest.mark.parametrize("n", [1, 24, 72])
def test_wilson_has_width_at_none_and_all(n):
    lo, hi = wilson(0, n)
    assert lo == 0.0 and hi > 0.0
    lo, hi = wilson(n, n)
    assert hi == 1.0 and lo < 1.0
    assert wilson(0, 24)[1] == pytest.approx(0.138, abs=0.001)  # the rule of three's neighbour


def test_a_rate_is_shown_with_its_count():
    assert rate(3, 72) == "3/72 = 0.04 [0.01, 0.12]"
    assert rate(0, 24).startswith("0/24 = 0.00 [0.00, 0.14]")


def test_the_prompt_bootstrap_is_wider_when_prompts_disagree():
    rng = np.random.default_rng(1)
    alike = (rng.random((12, 6)) < 0.5).astype(float)  # every image a coin flip
    split = np.repeat((np.arange(12) % 2)[:, None], 6, axis=1).astype(
        float
    )  # half the prompts always, half never
    lo_a, hi_a = prompt_bootstrap(alike)
    lo_s, hi_s = prompt_bootstrap(split)
    assert hi_s - lo_s > hi_a - lo_a


def test_one_declared_seed_split():
    from erase.seeds import EVAL_IMAGE_SEEDS, TUNING_IMAGE_SEEDS, split_of

    assert not set(TUNING_IMAGE_SEEDS) & set(EVAL_IMAGE_SEEDS)
    assert split_of([1000, 1001]) == "tuning" and split_of([2000]) == "evaluation"
    assert split_of([1000, 2000]) == "mixed" and split_of([5]) == "undeclared"
    assert split_of([100, 101], "relearn") == "tuning" and split_of([0, 1, 2], "relearn") == "evaluation"
