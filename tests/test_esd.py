"""ESD's two samplings: ``fresh`` (the authors': states from the model being trained, every
iteration) and ``bank`` (ours: the frozen model's trajectories, sampled once)."""

import copy

import pytest
import torch

from erase.diffusion import Conditioning, FreshStates, FrozenView, encode_prompts, predict, state_bank
from erase.errors import EraseError
from erase.layers import select_parameters
from erase.methods import REGISTRY
from erase.unlearn import run_method
from tests import tiny
from tests.test_methods import INPUTS, snapshot


def setup(seed: int = 0):
    pipe = tiny.sd1(seed)
    pipe.set_progress_bar_config(disable=True)
    prompts = encode_prompts(pipe, ["a red circle", "a red square"])
    uncond = encode_prompts(pipe, [""])
    params = select_parameters(pipe.unet, "xattn")
    return pipe, prompts, uncond, params


def perturb(params: dict) -> None:
    """Stand-in for an edit: moves the trained tensors far enough to change every trajectory."""
    with torch.no_grad():
        for i, p in enumerate(params.values()):
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(i)) * 0.5)


def test_frozen_view_predicts_as_the_original_after_the_live_weights_move():
    pipe, prompts, _, params = setup()
    original = copy.deepcopy(pipe.unet)
    view = FrozenView(pipe.unet, params)
    perturb(params)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor(500)
    expected = predict(original, x, t, prompts)
    assert torch.allclose(predict(view, x, t, prompts), expected, atol=1e-6)
    with torch.no_grad():
        assert not torch.allclose(predict(pipe.unet, x, t, prompts), expected, atol=1e-3)


def fresh_first_timestep(pipe, steps: int) -> int:
    from diffusers import DDIMScheduler

    sched = DDIMScheduler.from_config(pipe.scheduler.config)
    sched.set_timesteps(steps)
    return int(sched.timesteps[0])


def draw(states, seed: int = 5):
    return states.draw(3, torch.Generator().manual_seed(seed))


def test_fresh_states_follow_the_model_being_trained_and_bank_states_do_not():
    pipe, prompts, uncond, params = setup()
    original = copy.deepcopy(pipe.unet)
    fresh = FreshStates(pipe, prompts, uncond, FrozenView(pipe.unet, params), 4, 3.0, 1.0)
    bank = state_bank(
        pipe, prompts, uncond, trajectories=2, steps=4, guidance=3.0, eta=1.0,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    x0, t0, ci0, _ = draw(fresh)
    first = fresh_first_timestep(pipe, 4)
    assert int(t0[0]) < first, "this seed stops at pure noise, where no model has acted: pick another"
    assert torch.equal(draw(fresh)[0], x0)  # same seed, same model: same states
    bank_before = draw(bank)
    perturb(params)  # the edit moves the model being trained
    x1, t1, ci1, target1 = draw(fresh)
    # Same noise, stop step and prompts, so only the model that sampled them can differ.
    assert torch.equal(t0, t1) and torch.equal(ci0, ci1)
    assert not torch.allclose(x0, x1, atol=1e-4), "fresh states did not follow the edit"
    # The bank was sampled once from the frozen model: the edit does not move its states.
    assert all(torch.equal(a, b) for a, b in zip(bank_before, draw(bank)))
    # The target is the frozen model's negative guidance at the state reached.
    batch = Conditioning.cat([uncond.repeat(3), prompts[ci1]])
    out = predict(original, x1.repeat(2, 1, 1, 1), t1[0], batch).detach()
    base, own = out[:3], out[3:]
    assert torch.allclose(target1, base - 1.0 * (own - base), atol=1e-5)


@pytest.mark.parametrize("arch", ["sd1", "sdxl"])
def test_fresh_sampling_trains_only_its_parameters(arch):
    pipe = tiny.BUILDERS[arch]()
    pipe.set_progress_bar_config(disable=True)
    before = snapshot(pipe.unet)
    overrides = REGISTRY["esd-x"].smoke() | {"sampling": "fresh", "steps": 3}
    out = run_method(pipe, "esd-x", INPUTS, overrides=overrides, seed=0, progress=False)
    assert out.log["sampling"] == "fresh" and out.log["states"] is None
    changed = {k for k, v in pipe.unet.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and changed <= set(out.params)
    assert all(torch.isfinite(p).all() for p in pipe.unet.parameters())


def test_unknown_sampling_is_refused():
    with pytest.raises(EraseError, match="sampling must be one of bank, fresh"):
        REGISTRY["esd-x"].config({"sampling": "fast"})
