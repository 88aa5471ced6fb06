import json

import numpy as np
import pytest
import torch

from erase.errors import EraseError
from erase.generate import generate
from erase.judges import load_judge
from erase.models import load_pipeline, pick_device
from tests import tiny


def _images(pipe, seeds=(0, 1)):
    return np.stack(
        [np.asarray(im) for im in generate(pipe, ["a red circle"], seeds, steps=2, progress=False)]
    )


@pytest.mark.parametrize("kind", ["sd1", "sd2", "sdxl"])
def test_tiny_pipelines_round_trip_through_the_loader(kind, tmp_path):
    pipe = tiny.BUILDERS[kind]()
    pipe.set_progress_bar_config(disable=True)
    before = _images(pipe)
    pipe.save_pretrained(tmp_path / kind)
    loaded = load_pipeline(str(tmp_path / kind), device="cpu")
    assert type(loaded) is type(pipe)
    after = _images(loaded)
    assert after.shape[0] == 2 and np.isfinite(after).all()
    assert np.array_equal(before, after)


def test_images_depend_on_seed_not_on_batching():
    pipe = tiny.sd1()
    pipe.set_progress_bar_config(disable=True)
    together = generate(
        pipe, ["a red circle", "a blue square"], [3, 4], steps=2, batch_size=4, progress=False
    )
    alone = generate(pipe, ["a blue square"], [4], steps=2, batch_size=1, progress=False)
    assert np.array_equal(np.asarray(together[3]), np.asarray(alone[0]))
    assert not np.array_equal(np.asarray(together[2]), np.asarray(together[3]))


def test_shipped_toy_loads_with_plain_diffusers():
    from diffusers import StableDiffusionPipeline

    from erase.toy import WEIGHTS

    pipe = StableDiffusionPipeline.from_pretrained(WEIGHTS / "pipeline")
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size
    out = pipe(
        "a red circle", num_inference_steps=2, output_type="np", generator=torch.Generator().manual_seed(0)
    ).images
    assert out.shape == (1, 32, 32, 3)


def test_cpu_defaults_to_fp32_and_overrides_are_checked():
    assert pick_device("cpu") == (torch.device("cpu"), torch.float32)
    assert pick_device("cpu", "bf16")[1] == torch.bfloat16
    with pytest.raises(EraseError, match="dtype"):
        pick_device("cpu", "fp8")
    if not torch.cuda.is_available():
        with pytest.raises(EraseError, match="CUDA is not available"):
            pick_device("cuda")


def test_bad_model_specs_name_the_spec_and_the_fix(tmp_path):
    with pytest.raises(EraseError, match="neither a folder that exists nor a hub id"):
        load_pipeline(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(EraseError, match="not a diffusers pipeline"):
        load_pipeline(str(tmp_path / "empty"))
    (tmp_path / "file.safetensors").write_bytes(b"x")
    with pytest.raises(EraseError, match="is a file"):
        load_pipeline(str(tmp_path / "file.safetensors"))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    with pytest.raises(EraseError, match="FluxPipeline"):
        load_pipeline(str(tmp_path / "other"))
    with pytest.raises(EraseError, match="empty"):
        load_pipeline("  ")


def test_hub_id_without_network_or_cache_says_how_to_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(EraseError, match=r"could not load hub model nobody/no-such-model.*download"):
        load_pipeline("nobody/no-such-model")


def test_pickled_weights_are_refused_unless_allowed_by_name(tmp_path, capsys):
    pipe = tiny.sd1()
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(tmp_path / "p", safe_serialization=False)
    with pytest.raises(
        EraseError, match=r"pickled weights \(unet/diffusion_pytorch_model\.bin\).*--allow-pickle"
    ) as e:
        load_pipeline(str(tmp_path / "p"))
    assert "\n" not in str(e.value)
    loaded = load_pipeline(str(tmp_path / "p"), device="cpu", allow_pickle=True)
    assert "unpickling" in capsys.readouterr().err
    assert np.array_equal(_images(loaded), _images(pipe))


def test_checkpoint_files_are_refused_and_safetensors_win(tmp_path):
    tiny.sd1().save_pretrained(tmp_path / "p")
    unet = tmp_path / "p" / "unet"
    (unet / "model.ckpt").write_bytes(b"not read")
    load_pipeline(str(tmp_path / "p"), device="cpu")  # beside safetensors a pickle is never read
    for f in unet.glob("*.safetensors"):
        f.unlink()
    with pytest.raises(EraseError, match=r"\(unet/model\.ckpt\).*--allow-pickle"):
        load_pipeline(str(tmp_path / "p"))


def test_hub_ids_ask_for_safetensors_only(monkeypatch):
    from diffusers import DiffusionPipeline

    seen = []

    def fake(*args, **kwargs):
        seen.append(kwargs.get("use_safetensors"))
        raise OSError("offline")

    monkeypatch.setattr(DiffusionPipeline, "from_pretrained", fake)
    for allow in (False, True):
        with pytest.raises(EraseError, match="could not load hub model"):
            load_pipeline("someone/some-model", allow_pickle=allow)
    assert seen == [True, None]


def test_judge_specs(tmp_path):
    judge = load_judge("toy", device="cpu")
    assert judge.tokenizer(["a red circle"]).shape[1] == 16
    with pytest.raises(EraseError, match="is not toy, toy-fit, nudenet"):
        load_judge("nonsense")
    with pytest.raises(EraseError, match="no model 'NoSuchNet'"):
        load_judge("NoSuchNet:openai")
    (tmp_path / "j").mkdir()
    (tmp_path / "j" / "open_clip_config.json").write_text("{}")
    (tmp_path / "j" / "open_clip_pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(EraseError, match=r"no \.safetensors"):
        load_judge(str(tmp_path / "j"))


def test_a_hub_judge_not_in_the_cache_fails_at_once_without_a_network(monkeypatch):
    """No network: one line instead of a minute of retries; the hub's offline switch put back."""
    from huggingface_hub import constants

    from erase.judges import clip

    monkeypatch.setattr(clip, "_reachable", lambda url, timeout=3.0: False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the tests' own switch (conftest)
    before = constants.HF_HUB_OFFLINE
    with pytest.raises(
        EraseError, match=r"ViT-B-32:openai \(not in the local cache, and the hub cannot be reached\)"
    ):
        load_judge("ViT-B-32:openai")
    assert before == constants.HF_HUB_OFFLINE
