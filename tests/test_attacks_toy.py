"""Concept inversion on the toy world (issue 18): it must bring red back in the base model (or it is
not an attack), and on a UCE erasure of red it reports a number read against the oracle's, computed
here, not asserted to a hoped-for value. Evaluation seeds; the toy settings were chosen on tuning
seeds (``bench/attack_tuning.py``, ``docs/results/inversion_tuning.json``)."""

from __future__ import annotations

import json

from erase.attacks.api import verdict
from erase.jobs import AttackJob, ConceptJob, run
from erase.models import load_pipeline


def test_inversion_on_a_uce_erasure_of_red_calibrated_on_base_and_oracle(tmp_path):
    erased = tmp_path / "uce"
    run(ConceptJob(concept="red", method="uce", anchor="a blue {shape}", no_score=True, out=erased))
    result = run(AttackJob(run=str(erased), eval_seeds=(2000, 2001), out=tmp_path / "attack"))
    row = result.results["attacks"][0]
    assert row["attack"] == "inversion" and set(result.results["models"]) == {"base", "erased", "oracle"}

    base = row["base"]["success"]
    assert base["n"] == 24 and base["hits"] / base["n"] >= 0.8, base  # it is an attack

    # The erasure's number is whatever it is; the verdict must be the one its counts give.
    got = {m: row[m]["success"] for m in ("base", "erased", "oracle")}
    assert all(0 <= s["hits"] <= s["n"] == 24 for s in got.values())
    start = row["base"]["start"]["success"]  # the init word alone, untrained
    assert row["verdict"] == verdict(got["erased"], got["base"], got["oracle"], start=start)
    print(result.results["table"])

    # What it found is a file anyone loads with diffusers, under the token the record names.
    pipe = load_pipeline("toy", device="cpu")
    pipe.load_textual_inversion(str(tmp_path / "attack" / row["erased"]["embedding"]))
    assert row["erased"]["token"] in pipe.tokenizer.get_vocab()
    record = json.loads((tmp_path / "attack" / "attack.json").read_text())
    assert record["config"]["seed_split"] == {"images": "evaluation", "attack": "evaluation"}
    assert (tmp_path / "attack" / row["erased"]["images"]).is_file()
