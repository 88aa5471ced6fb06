"""Mechanics of the one relearning loop (tiny pipelines); efficacy on the toy world is issue 4's."""

import numpy as np
import pytest
import torch
from PIL import Image

from erase.errors import EraseError
from erase.layers import select_parameters
from erase.methods.base import ImageSet
from erase.relearn import (
    RelearnConfig,
    encode_examples,
    format_resurgence,
    load_image_folder,
    relearn,
    steps_to_resurgence,
)
from tests import tiny


def examples(n=4):
    rng = np.random.default_rng(0)
    ims = tuple(Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)) for _ in range(n))
    return ImageSet(ims, ("a red circle",) * n)


def run(cfg, pipe=None):
    pipe = pipe or tiny.sd1()
    data = encode_examples(pipe, examples())
    calls = []

    def evaluate():
        calls.append(1)
        return {"red": 0.0}

    return pipe, relearn(pipe, data, cfg, evaluate, progress=False), calls


@pytest.mark.parametrize("optimizer,lr", [("sgd", 0.5), ("adam", 1e-3)])
def test_loss_falls_under_both_optimizers(optimizer, lr):
    # The same examples over and over: the training loss must go down whatever the optimizer.
    _, out, _ = run(RelearnConfig(optimizer=optimizer, lr=lr, steps=30, batch_size=4, eval_every=30))
    losses = out["losses"]
    assert np.mean(losses[-5:]) < np.mean(losses[:5]), losses


def test_only_the_chosen_parameters_move_and_evaluation_runs_every_k_steps():
    pipe = tiny.sd1()
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    _, out, calls = run(RelearnConfig(params="xattn-kv", steps=6, eval_every=2, lr=1e-2), pipe)
    allowed = set(select_parameters(pipe.unet, "xattn-kv"))
    changed = {k for k, v in pipe.unet.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and changed <= allowed
    assert [p["step"] for p in out["curve"]] == [0, 2, 4, 6] and len(calls) == 4


def test_fixed_seed_fixed_result():
    a = run(RelearnConfig(steps=4, eval_every=4, seed=7))[0].unet.state_dict()
    b = run(RelearnConfig(steps=4, eval_every=4, seed=7))[0].unet.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_censoring_rule():
    curve = [{"step": 0, "red": 0.05}, {"step": 10, "red": 0.5}, {"step": 20, "red": 0.85}]
    assert steps_to_resurgence(curve, "red", original=1.0, tau=0.8) == 20
    assert steps_to_resurgence(curve, "red", original=1.0, tau=0.9) is None
    assert format_resurgence(None, 200) == "> 200" and format_resurgence(20, 200) == "20"


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"optimizer": "lion"}, "unknown optimizer 'lion'"),
        ({"lr": 0.0}, "learning rate must be positive"),
        ({"steps": 0}, "steps must be positive"),
        ({"params": "everything"}, "params must be one of"),
    ],
)
def test_bad_relearning_settings(bad, match):
    with pytest.raises(EraseError, match=match):
        RelearnConfig(**bad)


def test_relearning_folders_need_images_and_captions(tmp_path):
    with pytest.raises(EraseError, match="does not exist"):
        load_image_folder(tmp_path / "nope")
    (tmp_path / "d").mkdir()
    with pytest.raises(EraseError, match=r"no captions.txt or metadata.jsonl"):
        load_image_folder(tmp_path / "d")
    (tmp_path / "d" / "captions.txt").write_text("a.png\ta red circle\n")
    with pytest.raises(EraseError, match="missing or not an image"):
        load_image_folder(tmp_path / "d")
    Image.new("RGB", (8, 8), "red").save(tmp_path / "d" / "a.png")
    got = load_image_folder(tmp_path / "d")
    assert got.prompts == ("a red circle",) and len(got.images) == 1
    (tmp_path / "d" / "captions.txt").write_text("\n")
    with pytest.raises(EraseError, match="lists no images"):
        load_image_folder(tmp_path / "d")
