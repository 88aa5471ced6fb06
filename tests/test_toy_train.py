"""Mechanics of the training recipe on a few steps (efficacy is tested on the shipped weights)."""

import json

import pytest
import torch
from safetensors.torch import load_file

from erase.errors import EraseError
from erase.models import load_pipeline
from erase.recipes.train import ToyTrainConfig, train_toy

FAST = dict(world_size=96, vae_steps=2, clip_steps=2, unet_steps=3, vae_batch=4, clip_batch=8, unet_batch=4)


def test_a_short_run_writes_a_loadable_world(tmp_path):
    m = train_toy(ToyTrainConfig(**FAST), tmp_path / "w")
    assert json.loads((tmp_path / "w" / "manifest.json").read_text())["config"]["unet_steps"] == 3
    assert m["data"]["unet_train_samples"] == 96
    pipe = load_pipeline(str(tmp_path / "w" / "pipeline"), device="cpu")
    assert pipe.tokenizer.model_max_length == 16


def test_unet_only_retraining_with_an_exclusion_keeps_the_other_stages(tmp_path):
    from erase.toy import WEIGHTS

    m = train_toy(ToyTrainConfig(**FAST, stages=("unet",), exclude=("color=red",)), tmp_path / "o")
    assert m["data"]["unet_train_samples"] == 72
    for part in ("vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        a = load_file(WEIGHTS / "pipeline" / part)
        b = load_file(tmp_path / "o" / "pipeline" / part)
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_same_weights(tmp_path):
    cfg = ToyTrainConfig(**FAST, stages=("unet",))
    train_toy(cfg, tmp_path / "a")
    train_toy(cfg, tmp_path / "b")
    a = load_file(tmp_path / "a" / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors")
    b = load_file(tmp_path / "b" / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_configs_are_refused_before_training():
    with pytest.raises(EraseError, match="unet_steps must be positive"):
        ToyTrainConfig(unet_steps=0)
    with pytest.raises(EraseError, match="stages"):
        ToyTrainConfig(stages=())


def test_failed_training_leaves_nothing_behind(tmp_path, monkeypatch):
    import erase.recipes.train as tt

    def boom(*a, **k):
        raise EraseError("unet loss became nan at step 0; lower the learning rate")

    monkeypatch.setattr(tt, "train_unet", boom)
    with pytest.raises(EraseError, match="nan"):
        train_toy(ToyTrainConfig(**FAST, stages=("unet",)), tmp_path / "x")
    assert list(tmp_path.iterdir()) == []
