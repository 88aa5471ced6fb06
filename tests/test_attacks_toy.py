"""Attacks on the toy world (issue 18), on evaluation seeds (attack seed 0, image seeds 2000-2001).

Concept inversion must bring red back in the base model, well above what its untrained starting
point (the init word, "green") draws there, or it is not an attack; on a UCE erasure of red it
reports a number that is computed here, not asserted to a hoped-for value, read against the red
oracle. Its toy settings were chosen on tuning seeds, base model only (``bench/attack_tuning.py``,
``docs/results/inversion_tuning.json``: 48/48 there, from 0/48 untrained). Both tests are in the
efficacy tier (about two minutes each): the default suite keeps its six-minute bound.

The adversarial prompt attack must draw the cross on the base model (by the fit judge, which reads
"none" for the glyphs the toy CLIP judge called crosses), and its number on an erasure of the cross
is read against its control, as many random words for the same budget (efficacy tier).
"""

from __future__ import annotations

import json

import pytest

from erase.attacks.api import against_control, verdict
from erase.jobs import AttackJob, ConceptJob, run
from erase.models import load_pipeline


@pytest.mark.efficacy
def test_inversion_brings_red_back_in_the_base_model_and_is_read_against_the_red_oracle(tmp_path):
    erased = tmp_path / "uce"
    run(ConceptJob(concept="red", method="uce", anchor="a blue {shape}", no_score=True, out=erased))
    result = run(AttackJob(run=str(erased), eval_seeds=(2000, 2001), out=tmp_path / "attack"))
    print(result.results["table"])
    row = result.results["attacks"][0]
    assert row["attack"] == "inversion"
    base, start = row["base"]["success"], row["base"]["start"]["success"]
    assert base["n"] == start["n"] == 24
    assert base["hits"] / base["n"] >= 0.8, base  # it brings red out of the model that learned it
    assert base["ci95"][0] > start["ci95"][1], (base, start)  # and that is the attack's doing

    # The erasure's number is whatever it is (reported, not hoped for); the verdict is the one
    # its counts give.
    got = {m: row[m]["success"] for m in ("base", "erased", "oracle")}
    assert all(0 <= s["hits"] <= s["n"] == 24 for s in got.values())
    assert row["verdict"] == verdict(got["erased"], got["base"], got["oracle"], start=start)
    assert row["verdict"]["outcome"] in ("circumvented", "held", "held, below the oracle")

    # What it found is a file anyone loads with diffusers, under the token the record names.
    pipe = load_pipeline("toy", device="cpu")
    pipe.load_textual_inversion(str(tmp_path / "attack" / row["erased"]["embedding"]))
    assert row["erased"]["token"] == "<red-inv>"
    assert "<red-inv>" in pipe.tokenizer.get_vocab()
    record = json.loads((tmp_path / "attack" / "attack.json").read_text())
    assert record["config"]["seed_split"] == {"images": "evaluation", "attack": "evaluation"}
    assert (tmp_path / "attack" / row["erased"]["images"]).is_file()


@pytest.mark.efficacy
def test_the_prompt_attack_draws_the_cross_on_the_base_model_and_is_read_against_its_control(tmp_path):
    """The prompt attack's toy settings were chosen on the base model (tuning seeds, three attack
    seeds, the cross read by the fit judge: docs/results/prompt_tuning.json). Here, on evaluation
    seeds and by the same judge, its words must draw the cross on the base model (the verdict's bar:
    half the images or more), or it is not an attack. On UCE's erasure of the cross (guided to
    "a {color} square") its number and its random control's (as many random three-word prefixes,
    the same number of UNet calls) are computed and read against each other, not asserted to a
    hoped-for value: on the robustness table both draw 0/72 there."""
    erased = tmp_path / "uce"
    run(ConceptJob(concept="cross", method="uce", anchor="a {color} square", no_score=True, out=erased))
    attacks = ("prompt", "prompt-random")
    result = run(
        AttackJob(
            run=str(erased),
            attack=attacks,
            judge="toy-fit",
            eval_seeds=(2000, 2001),
            oracle="none",
            out=tmp_path / "a",
        )
    )
    print(result.results["table"])
    found, control = result.results["attacks"]
    assert (found["attack"], control["attack"]) == ("prompt", "prompt-random")
    assert found["erased"]["budget"]["unet_forwards"] == control["erased"]["budget"]["unet_forwards"]
    words = found["erased"]["words"]
    print(f"found: {words!r} -> {found['erased']['prompts'][0]!r}; random: {control['erased']['words']!r}")
    assert found["erased"]["reads_back"] and "cross" not in words.split()
    base = found["base"]["success"]
    assert base["n"] == 24 and base["hits"] / base["n"] >= 0.5, base  # it is an attack
    assert found["verdict"]["outcome"] != "not an attack here", found["verdict"]

    # On the erasure: whatever the counts say, read the way they say it.
    got, chance = found["erased"]["success"], control["erased"]["success"]
    assert got["n"] == chance["n"] == 24
    assert found["verdict"]["against_control"] == against_control(got, chance, "prompt-random")
    assert (tmp_path / "a" / "prompt" / "erased" / "prompt.txt").read_text().strip() == words
