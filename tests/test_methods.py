"""One test matrix over the method registry, on tiny SD 1.x, 2.x-like and XL-like pipelines.

Mechanics only (random weights): which parameters move, determinism, finiteness, deltas.
Whether erasure works is tested on the trained toy world (test_erasure_toy.py).
"""

import pkgutil
import re

import numpy as np
import pytest
import torch
from PIL import Image

import erase.methods
from erase.errors import EraseError
from erase.generate import generate
from erase.layers import select_parameters
from erase.methods import REGISTRY, get_method, names
from erase.methods.api import MethodModule
from erase.methods.base import EraseInputs, ImageSet
from erase.models import load_pipeline
from erase.train import FitHooks, FitSettings, NonFiniteLoss, fit
from erase.unlearn import run_method, write_delta
from tests import tiny


def image_set(n, seed):
    rng = np.random.default_rng(seed)
    ims = tuple(Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)) for _ in range(n))
    return ImageSet(ims, tuple(f"a {c} square" for c in ("red", "blue", "green", "yellow")[:n]))


INPUTS = EraseInputs(
    targets=("a red circle", "a red square"),
    anchors=("a circle", "a square"),
    preserve=("a blue circle",),
    forget=image_set(2, 0),
    retain=image_set(4, 1),
)


def fast(name: str) -> dict:
    """The method's SMOKE settings: the test matrix reads them from the method's own file."""
    return REGISTRY[name].smoke()


def one_per_file() -> list[str]:
    return names(one_per_file=True)


def snapshot(unet) -> dict:
    return {k: v.detach().clone() for k, v in unet.state_dict().items()}


def test_every_method_file_is_registered():
    files = {m.name for m in pkgutil.iter_modules(erase.methods.__path__)} - {"base", "api"}
    registered = {m.module_name for m in REGISTRY.values()}
    assert files == registered


@pytest.mark.parametrize("arch", ["sd1", "sd2", "sdxl"])
@pytest.mark.parametrize("name", list(REGISTRY))
def test_method_changes_only_its_parameters_and_stays_finite(name, arch):
    pipe = tiny.BUILDERS[arch]()
    pipe.set_progress_bar_config(disable=True)
    before = snapshot(pipe.unet)
    out = run_method(pipe, name, INPUTS, overrides=fast(name), seed=0, progress=False)
    allowed = set(select_parameters(pipe.unet, getattr(out.config, "params", "xattn-kv")))
    assert set(out.params) <= allowed
    changed = {k for k, v in pipe.unet.state_dict().items() if not torch.equal(v, before[k])}
    assert changed, "the method changed nothing"
    assert changed <= set(out.params), sorted(changed - set(out.params))[:3]
    image = np.asarray(generate(pipe, ["a red circle"], [0], steps=2, progress=False)[0])
    assert np.isfinite(image).all()
    assert all(torch.isfinite(p).all() for p in pipe.unet.parameters())


@pytest.mark.parametrize("name", list(REGISTRY))
def test_fixed_seed_gives_identical_weights(name):
    weights = []
    for _ in range(2):
        pipe = tiny.sd1()
        pipe.set_progress_bar_config(disable=True)
        run_method(pipe, name, INPUTS, overrides=fast(name), seed=3, progress=False)
        weights.append(snapshot(pipe.unet))
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


@pytest.mark.parametrize("name", one_per_file())
def test_delta_saves_loads_and_applies_to_the_same_weights(name, tmp_path):
    tiny.sd1().save_pretrained(tmp_path / "base")
    base = str(tmp_path / "base")
    pipe = load_pipeline(base, device="cpu")
    out = run_method(pipe, name, INPUTS, overrides=fast(name), seed=0, progress=False)
    meta = write_delta(tmp_path / "d.safetensors", pipe, out, base_spec=base, seed=0)
    assert meta["method"] == name and meta["kind"] == REGISTRY[name].kind
    edited = load_pipeline(f"{base}+{tmp_path / 'd.safetensors'}", device="cpu")
    for k, v in pipe.unet.state_dict().items():
        assert torch.equal(v, edited.unet.state_dict()[k]), k
    # The same delta on another base is refused.
    tiny.sd1(seed=1).save_pretrained(tmp_path / "other")
    with pytest.raises(EraseError, match="was made from model"):
        load_pipeline(f"{tmp_path / 'other'}+{tmp_path / 'd.safetensors'}", device="cpu")


def test_non_finite_loss_stops_and_keeps_the_last_good_weights(monkeypatch):
    import erase.settings

    # A NaN setting is refused where settings are read (test_bad_input); let one through to make
    # the loss non-finite from the first step.
    monkeypatch.setattr(erase.settings, "typed", lambda owner, name, annotation, value: value)
    pipe = tiny.sd1()
    pipe.set_progress_bar_config(disable=True)
    before = snapshot(pipe.unet)
    with pytest.raises(EraseError, match="loss became nan at step 0; stopped before any step"):
        run_method(pipe, "esd-x", INPUTS, overrides=fast("esd-x") | {"eta": float("nan")}, progress=False)
    assert all(torch.equal(v, before[k]) for k, v in pipe.unet.state_dict().items())


def test_low_memory_non_finite_gradient_stops_and_says_which_tensors_stepped():
    # low_memory steps each tensor inside the backward pass; a NaN gradient in one tensor (sqrt at
    # 0 has an infinite slope, times 0) arrives after some others have stepped: the loop must
    # stop, leave the bad tensor and every later one untouched, and count the ones that moved.
    unet = tiny.sd1().unet
    params = select_parameters(unet, "xattn")
    names = sorted(params)
    bad = params[names[len(names) // 2]]

    def loss_fn(step):
        loss = sum((p.float() ** 2).mean() for p in params.values())
        if step == 1:
            loss = loss + torch.sqrt(((bad - bad.detach()) ** 2).sum())
        return loss

    after_first = {}

    def remember(step):
        if step == 0:
            after_first.update({k: v.detach().clone() for k, v in params.items()})

    with pytest.raises(NonFiniteLoss, match=r"at step 1; .* so (\d+) of (\d+) tensors took step 1") as err:
        fit(
            unet,
            params,
            loss_fn,
            FitSettings(3, 1e-2, progress=False, low_memory=True),
            FitHooks(after_step=remember),
        )
    stepped, total = map(int, re.search(r"(\d+) of (\d+) tensors", str(err.value)).groups())
    moved = [k for k, v in params.items() if not torch.equal(v, after_first[k])]
    assert total == len(params) and len(moved) == stepped < total
    assert torch.equal(bad, after_first[names[len(names) // 2]])
    assert all(p.grad is None for p in params.values())
    assert not unet.is_gradient_checkpointing


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"targets": ("a red circle",), "preserve": ("a red circle",)}, "both erased and preserved"),
        ({"targets": ("a red circle",), "anchors": ("a red circle",)}, "anchor .* equals its target"),
        ({"targets": ("a", "b"), "anchors": ("c",)}, "1 anchors for 2"),
    ],
)
def test_bad_inputs_are_refused(bad, match):
    with pytest.raises(EraseError, match=match):
        EraseInputs(**bad)


UNTRAINING = [n for n, m in REGISTRY.items() if m.kind == "untraining"]


@pytest.mark.parametrize("name", UNTRAINING)
def test_untraining_methods_refuse_an_empty_forget_set_and_change_nothing(name):
    pipe = tiny.sd1()
    before = snapshot(pipe.unet)
    for forget in (None, ImageSet((), ())):
        inputs = EraseInputs(forget=forget, retain=INPUTS.retain)
        with pytest.raises(EraseError, match=f"{name} needs a forget set"):
            run_method(pipe, name, inputs, overrides=fast(name), progress=False)
    assert all(torch.equal(v, before[k]) for k, v in pipe.unet.state_dict().items())


def test_every_method_has_a_kind_and_toy_settings_it_accepts():
    assert {m.kind for m in REGISTRY.values()} == {"unlearning", "untraining"}
    for m in REGISTRY.values():
        m.config(toy=True)  # a toy setting the config refuses would break every toy run
        m.config(m.smoke())
        assert isinstance(m.module, MethodModule), f"{m.name} lacks part of erase.methods.api.MethodModule"


def test_unknown_methods_and_settings_are_refused():
    with pytest.raises(EraseError, match="unknown method 'esd-z'"):
        get_method("esd-z")
    with pytest.raises(EraseError, match="has no setting 'etaa'"):
        get_method("esd-x").config({"etaa": 1})
    with pytest.raises(EraseError, match="lr must be positive"):
        get_method("ca").config({"lr": -1})
    with pytest.raises(EraseError, match="ca needs an anchor"):
        run_method(tiny.sd1(), "ca", EraseInputs(targets=("a red circle",)), overrides=fast("ca"))


def test_ca_negative_prompt_only_for_anchors_that_remove_words():
    from erase.methods.ablation import removal_negative

    assert removal_negative("a red circle", "a circle") == "red"
    assert removal_negative("a house in the style of Van Gogh", "a house") == "in the style of van gogh"
    # A guide names its own replacement: a negative prompt would also push away what it shares.
    assert removal_negative("a red cross", "a red square") is None
    assert removal_negative("a red circle", "a blue circle") is None
    assert removal_negative("a circle", "a circle") is None


def test_low_memory_gives_the_same_weights_and_is_switched_off_after():
    weights = []
    for low in (False, True):
        pipe = tiny.sd1()
        pipe.set_progress_bar_config(disable=True)
        overrides = {**fast("esd-x"), "steps": 3, "low_memory": low}
        run_method(pipe, "esd-x", INPUTS, overrides=overrides, seed=0, progress=False)
        assert not pipe.unet.is_gradient_checkpointing
        weights.append(snapshot(pipe.unet))
    for k in weights[0]:
        torch.testing.assert_close(weights[0][k], weights[1][k], rtol=1e-5, atol=1e-6)
