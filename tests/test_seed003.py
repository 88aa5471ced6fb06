"""Seed 003's exact case: descent-ascent on a ridge-regularised exponential loss does not forget.

Two orthogonal coordinates, lambda = 1, |R| = (100, 100), |F| = (30, 10), every y.x = 1, per-set
mean losses. The retrained solution is (0.3517, 0.3517) and the original (0.3730, 0.3296), 0.031
away; descent-ascent (retain loss minus forget loss, the GradDiff objective at alpha = 1) converges
to (-0.3574, 0.2039), 0.724 away: about 23 times farther from the retrained model than doing
nothing. With |F_1| = 80 the ascent term wins, there is no minimum, and the divergence guard of
the shared loop must stop it.
"""

import math

import pytest
import torch

from erase.recipes.seed003 import W_DA, W_DATA, W_RETRAIN, descent_ascent, run_case
from erase.train import Diverged


def test_the_closed_forms_are_the_stationary_points():
    # Lambert-W solutions of the per-coordinate first-order conditions.
    for i, (wd, wr) in enumerate(zip(W_DATA, W_RETRAIN)):
        n_d = (130, 110)[i] / 240
        assert abs(n_d * math.exp(-wd) - wd) < 1e-3
        assert abs(0.5 * math.exp(-wr) - wr) < 1e-3


def test_descent_ascent_converges_far_from_the_retrained_model():
    w = descent_ascent(forget=(30, 10))
    assert torch.allclose(w, torch.tensor(W_DA, dtype=torch.float64), atol=1e-3), w
    far = torch.dist(w, torch.tensor(W_RETRAIN, dtype=torch.float64)).item()
    near = math.dist(W_DATA, W_RETRAIN)
    assert far == pytest.approx(0.724, abs=2e-3) and near == pytest.approx(0.031, abs=1e-3)
    assert 21 < far / near < 25  # "about 23x farther than the original"


def test_with_a_large_forget_set_descent_ascent_diverges_and_the_guard_stops_it():
    with pytest.raises(Diverged, match=r"norm grew .* past the limit 3x; stopped and kept the weights"):
        descent_ascent(forget=(80, 10))


def test_run_case_reports_the_seed_numbers():
    out = run_case((30, 10))
    assert out["descent_ascent"] == [-0.3574, 0.2039] and 21 < out["ratio"] < 25
    assert "norm grew" in run_case((80, 10))["diverged"]
