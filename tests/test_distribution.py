"""CMMD and FID (issue 21): the statistic, its permutation null, FID with an injected feature
extractor, and on the toy world: two sample sets of one model are the same within noise, a damaged
model's are not; ``erase concept`` records CMMD for every scored concept."""

from __future__ import annotations

import json

import pytest
import torch

from erase.distribution import cmmd, fid, mmd


def test_cmmd_is_zero_for_identical_sets_and_grows_with_a_shift():
    gen = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(40, 16, generator=gen), dim=-1)
    y = torch.nn.functional.normalize(torch.randn(40, 16, generator=gen), dim=-1)
    assert mmd(x, x) == pytest.approx(0.0, abs=1e-9)
    same = cmmd(x, y, permutations=200)
    assert same["cmmd"] <= same["null_95"] and same["p_value"] > 0.05 and same["n"] == [40, 40]
    shifted = torch.nn.functional.normalize(y + 0.8 * torch.eye(16)[0], dim=-1)
    far = cmmd(x, shifted, permutations=200)
    assert far["cmmd"] > far["null_95"] and far["p_value"] < 0.01
    assert cmmd(x, y, permutations=50, seed=3) == cmmd(x, y, permutations=50, seed=3)  # seeded
    with pytest.raises(ValueError, match="at least 2"):
        cmmd(x[:1], y)


class MeanColour(torch.nn.Module):
    """A stand-in for Inception: an image's mean colour and its spread (users with the weights use
    torchmetrics' own)."""

    num_features = 6

    def forward(self, images):
        x = images.float() / 255
        return torch.cat([x.mean((2, 3)), x.std((2, 3))], dim=1).double()


def test_fid_through_torchmetrics_with_an_injected_feature_extractor():
    pytest.importorskip("torchmetrics")
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(0, 256, (32, 3, 16, 16), generator=gen, dtype=torch.uint8)
    b = torch.randint(0, 256, (32, 3, 16, 16), generator=gen, dtype=torch.uint8)
    dark = (b // 3).to(torch.uint8)
    assert fid(a, b, feature=MeanColour()) < fid(a, dark, feature=MeanColour())
    assert fid(a, a, feature=MeanColour()) == pytest.approx(0.0, abs=1e-3)


def test_on_the_toy_world_one_model_is_the_same_within_noise_and_a_damaged_one_is_not(
    toy_pipe, toy_judge, toy_book
):
    from erase.models import load_pipeline
    from erase.score import distribution_shift, score_concepts, take_embeddings

    kept = [toy_book.get("green")]

    def embeddings(pipe, seeds):
        res = score_concepts(pipe, toy_judge, kept, seeds=seeds, steps=10, progress=False, embeddings=True)
        return take_embeddings(res)

    a = embeddings(toy_pipe, [2000, 2001, 2002, 2003])
    b = embeddings(toy_pipe, [2004, 2005, 2006, 2007])  # the same model, other noise
    damaged = load_pipeline("toy", device="cpu")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in damaged.unet.named_parameters():
            if "attn2.to_v" in name:  # what the text says to the image, blurred by one std of noise
                p.add_(p.std() * torch.randn(p.shape, generator=gen))
    c = embeddings(damaged, [2000, 2001, 2002, 2003])
    # Measured: the damage costs the judge 10 of 48 green images (48/48 -> 38/48); CMMD 0.87 against a
    # null 95th percentile of 0.37 (p = 0.002 of 500 splits). Half that noise is not told apart with
    # 48 images a side (0.23 against 0.38): CMMD needs its damage visible.
    same, hurt = distribution_shift(a, b)["green"], distribution_shift(a, c)["green"]
    print(
        f"CMMD same model {same['cmmd']:.3f} (null {same['null_95']:.3f}); damaged {hurt['cmmd']:.3f} (null {hurt['null_95']:.3f})"
    )
    assert same["cmmd"] <= same["null_95"]
    assert hurt["cmmd"] > hurt["null_95"] and hurt["cmmd"] > 2 * same["cmmd"]


def test_concept_records_cmmd_for_every_scored_concept(tmp_path, capsys):
    from erase.cli import main

    out = tmp_path / "uce"
    args = ["concept", "red", "--method", "uce", "--anchor", "a blue {shape}", "--eval-seeds", "2000-2001"]
    assert main([*args, "--eval-steps", "3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    res = json.loads((out / "record.json").read_text())["results"]
    assert set(res["cmmd"]) == {"red", "green", "blue", "yellow"}
    assert all("embeddings" not in r for r in res["after"]["concepts"].values())
    assert "CMMD (x1000" in printed and "green (kept)" in printed
