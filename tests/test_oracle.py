"""Oracle mechanics: keys, the cache, and a (very short) retraining stored as a delta on the toy."""

import pytest
import torch

from erase.delta import read_meta
from erase.errors import EraseError
from erase.models import load_pipeline
from erase.recipes.oracle import build_oracle, find_oracle, kind_of, oracle_key


def test_keys_name_the_exclusion():
    assert oracle_key(["color=red"]) == "color=red"
    assert oracle_key(ids=[3, 1, 2, 2]) == oracle_key(ids=[1, 2, 3]) != oracle_key(ids=[1, 2])
    assert oracle_key(ids=[1, 2]).startswith("ids2-")
    assert kind_of(["color=red"], []) == "unlearning" and kind_of([], [1]) == "untraining"
    with pytest.raises(EraseError, match="needs something to leave out"):
        oracle_key()
    with pytest.raises(EraseError, match="color must be one of"):
        oracle_key(["color=purple"])


def test_a_built_oracle_is_cached_and_loads_as_a_delta_on_the_toy(tmp_path, monkeypatch):
    monkeypatch.setenv("ERASE_CACHE", str(tmp_path / "cache"))
    assert find_oracle(["shape=triangle"]) is None  # not shipped (red and cross are)
    out = build_oracle(["shape=triangle"], world_size=96, unet_steps=2, unet_batch=4)
    assert out == tmp_path / "cache" / "oracles" / "shape=triangle" and find_oracle(["shape=triangle"]) == out
    meta = read_meta(out / "delta.safetensors")
    assert (
        meta["kind"] == "unlearning"
        and meta["concepts"] == {"erase": "triangle"}
        and meta["train_samples"] == 72
    )
    base = load_pipeline("toy", device="cpu")
    oracle = load_pipeline(f"toy+{out}", device="cpu")
    changed = [
        k for k, v in oracle.unet.state_dict().items() if not torch.equal(v, base.unet.state_dict()[k])
    ]
    assert len(changed) > 0.9 * len(base.unet.state_dict())  # a new UNet, not an edit
    with pytest.raises(EraseError, match="out of range"):
        build_oracle(ids=[100], world_size=96, unet_steps=1, out=tmp_path / "x")


@pytest.mark.parametrize(
    "args,message",
    [
        (["--exclude", "color=purple"], "color must be one of"),
        ([], "needs something to leave out"),
        (["--forget", "some/folder"], "must be a toy spec"),
        (["--forget", "toy:ids=99999"], "out of range"),
    ],
)
def test_bad_oracle_input_is_one_line_exit_2(args, message, capsys, tmp_path, monkeypatch):
    from erase.cli import main

    monkeypatch.setenv("ERASE_CACHE", str(tmp_path))
    assert main(["toy", "oracle", *args]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert list(tmp_path.iterdir()) == []
