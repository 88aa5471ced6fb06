"""Model cards (issue 21): what `erase apply` writes beside the weights, read back as a person would:
the Hugging Face header, what was erased and how, the scores with counts and intervals and CMMD,
and the attacks' verdicts when `erase attack` ran on the run."""

from __future__ import annotations

import json

import yaml

from erase.cli import main


def test_apply_writes_a_card_with_scores_cmmd_and_attacks(tmp_path):
    run_dir = tmp_path / "uce"
    args = ["concept", "red", "--method", "uce", "--anchor", "a blue {shape}", "--eval-seeds", "2000"]
    assert main([*args, "--eval-steps", "2", "--out", str(run_dir)]) == 0
    success = {"hits": 3, "n": 12, "accuracy": 0.25, "ci95": [0.09, 0.53]}
    attack = {
        "results": {
            "attacks": [
                {
                    "attack": "inversion",
                    "base": {"success": success | {"hits": 12, "accuracy": 1.0, "ci95": [0.76, 1.0]}},
                    "erased": {"success": success},
                    "oracle": None,
                    "verdict": {"outcome": "circumvented"},
                }
            ]
        }
    }
    (run_dir / "attack").mkdir()
    (run_dir / "attack" / "attack.json").write_text(json.dumps(attack))
    assert main(["apply", str(run_dir), "--out", str(tmp_path / "full")]) == 0

    card = (tmp_path / "full" / "README.md").read_text()
    _, header, body = card.split("---\n", 2)
    meta = yaml.safe_load(header)
    assert meta["base_model"] == "toy" and meta["library_name"] == "diffusers" and meta["license"] == "other"
    assert {"erase", "concept-erasure", "text-to-image"} <= set(meta["tags"])
    assert "# toy with `red` erased by uce" in body and "Kept on purpose: green, blue, yellow" in body
    assert "erase concept red --method uce" in body
    record = json.loads((run_dir / "record.json").read_text())["results"]
    red = record["after"]["concepts"]["red"]
    row = next(line for line in body.splitlines() if line.startswith("| red |"))
    assert f"({red['hits']}/{red['n']}, 95% CI" in row and f"{record['cmmd']['red']['cmmd']:.3f}" in row
    assert (
        "| inversion | 1.00 (12/12, 95% CI 0.76-1.00) | 0.25 (3/12, 95% CI 0.09-0.53) | - | circumvented |"
        in body
    )
    assert "from_pretrained" in body
