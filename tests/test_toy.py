"""The shipped toy world is good enough to erase things from (trained weights, not random ones)."""

import json

import pytest
import torch

from erase.recipes.quality import toy_quality
from erase.recipes.train import clip_accuracy
from erase.seeds import eval_image_seeds
from erase.toy import WEIGHTS


@pytest.mark.efficacy  # about a minute
def test_toy_model_draws_the_colour_and_shape_it_is_asked_for(toy_pipe, toy_judge):
    # 16 plain colour x shape prompts, 3 held-out phrasings, 6 evaluation seeds: 288 images (the
    # README's table: `erase toy eval`, seeds 2000-2007)
    # (fewer than 18 per prompt makes the worst-prompt figure mostly sampling noise).
    q = toy_quality(toy_pipe, toy_judge, list(eval_image_seeds(6)), progress=False)
    assert q["color"] >= 0.90, q["per_prompt"]
    assert q["shape"] >= 0.90, q["per_prompt"]
    assert q["min_prompt"] >= 0.60, q["per_prompt"]


def test_toy_clip_classifies_fresh_renders(toy_judge):
    acc = clip_accuracy(toy_judge.model, toy_judge.tokenizer, seed=12345, n_per=4)
    assert min(acc.values()) >= 0.98, acc


def test_text_encoder_is_the_clip_text_tower(toy_pipe, toy_judge):
    """SD conditions on a frozen CLIP text encoder: ours must equal the toy CLIP's text tower."""
    texts = ["a red circle", "a drawing of a blue cross in stripes style"]
    ids = toy_pipe.tokenizer(texts, padding="max_length", max_length=16, return_tensors="pt").input_ids
    oc_ids = toy_judge.tokenizer(texts)
    clip = toy_judge.model
    with torch.no_grad():
        hidden = toy_pipe.text_encoder(ids).last_hidden_state
        x = clip.token_embedding(oc_ids) + clip.positional_embedding
        x = clip.ln_final(clip.transformer(x, attn_mask=clip.attn_mask))
        pooled = toy_pipe.text_encoder(ids).pooler_output @ clip.text_projection
    for k, _text in enumerate(texts):
        n = int((oc_ids[k] == toy_judge.tokenizer.eot_token_id).nonzero()[0]) + 1
        torch.testing.assert_close(hidden[k, :n], x[k, :n], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pooled, clip.encode_text(oc_ids), atol=1e-5, rtol=1e-5)


def test_manifest_records_how_the_weights_were_made():
    m = json.loads((WEIGHTS / "manifest.json").read_text())
    assert m["config"]["seed"] == 0 and m["config"]["unet_steps"] > 0
    q = m["metrics"]["quality"]
    assert q["color"] >= 0.9 and q["shape"] >= 0.9
    assert m["metrics"]["clip"]["zero_shot_accuracy"]["shape"] >= 0.98
    size = sum(f.stat().st_size for f in WEIGHTS.rglob("*") if f.is_file())
    assert size < 25 * 2**20


@pytest.mark.slow
def test_full_recipe_rebuilds_a_model_as_good_as_the_shipped_one(tmp_path):
    from erase.cli import main

    assert main(["toy", "train", "--out", str(tmp_path / "toy")]) == 0
    m = json.loads((tmp_path / "toy" / "manifest.json").read_text())
    assert m["metrics"]["quality"]["color"] >= 0.9 and m["metrics"]["quality"]["shape"] >= 0.9
