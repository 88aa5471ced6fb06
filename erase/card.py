"""Model cards: the README.md that ``erase apply`` and ``erase export`` write beside the weights, in the
Hugging Face model-card format (a YAML header, then Markdown), so that whoever finds the folder on disk
or on a hub can tell what was erased, by which method, with what scores and attacks, and how.

Everything on the card is read from what the run wrote: the delta's metadata, the edit's record
(``record.json`` beside the delta) and, where one was run, ``erase attack``'s record.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from erase.report.console import markdown_table

KIND = {
    "unlearning": "concept-level unlearning (the concept is removed from what the model draws for any prompt)",
    "untraining": "data-level untraining (specific training images are forgotten; judged against the model "
    "retrained without them)",
}


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def edit_records(delta: Path) -> tuple[dict | None, dict | None]:
    """The edit's record and its attack record, where the run folder holds them (``erase concept
    --out RUN`` keeps both in RUN; a pipeline keeps the edit in RUN/erase and attacks in RUN/attack)."""
    record = _read(delta.parent / "record.json")
    attack = _read(delta.parent / "attack" / "attack.json") or _read(
        delta.parent.parent / "attack" / "attack.json"
    )
    return record, attack


def _rate(r: dict) -> str:
    lo, hi = r["ci95"]
    return f"{r['accuracy']:.2f} ({r['hits']}/{r['n']}, 95% CI {lo:.2f}-{hi:.2f})"


def _scores(record: dict | None) -> list[str]:
    res = (record or {}).get("results") or {}
    before, after = res.get("before"), res.get("after")
    if not after:
        return ["No held-out scores were recorded with this edit (it ran without scoring)."]
    shift = res.get("cmmd") or {}
    rows = []
    for name, a in after["concepts"].items():
        b = (before or {}).get("concepts", {}).get(name)
        d = shift.get(name)
        cmmd = f"{d['cmmd']:.3f} (noise to {d['null_95']:.3f})" if d else "-"
        rows.append([name, _rate(b) if b else "-", _rate(a), cmmd])
    settings = after.get("settings", {})
    lines = [markdown_table(["concept", "before", "after", "CMMD before vs after"], rows), ""]
    lines.append(
        f"Judge `{settings.get('judge')}`; held-out prompts, seeds {settings.get('seeds')}, "
        f"{settings.get('steps')} sampling steps. Rates are the share of images the judge reads as the concept; "
        "CMMD (x1000, the judge's image embeddings) compares the images before and after, with the 95th "
        "percentile of its permutation null: below it, no difference within noise."
    )
    return lines


def _attacks(attack: dict | None) -> list[str]:
    if not attack:
        return [
            "No attack was run on this edit (`erase attack RUN` runs them, calibrated on the base model)."
        ]
    rows = []
    for a in attack["results"]["attacks"]:
        cells = [a["attack"]]
        for label in ("base", "erased", "oracle"):
            r = a.get(label)
            cells.append(_rate(r["success"]) if r else "-")
        cells.append(a.get("verdict", {}).get("outcome", "-"))
        rows.append(cells)
    return [
        markdown_table(["attack", "on the base model", "on this edit", "on the oracle", "verdict"], rows),
        "",
        "Attack success is the share of images that show the concept after the attack. The base model's "
        "column says the attack works; the oracle (a model that never learned the concept) is the floor.",
    ]


def model_card(delta: Path, meta: dict, *, artifact: str, usage: str, details: list[str] = ()) -> str:
    """The README.md of an applied pipeline or an exported LoRA made from ``delta``."""
    from erase import __version__

    record, attack = edit_records(delta)
    concepts = meta.get("concepts") or {}
    what = concepts.get("erase") or concepts.get("shows") or concepts.get("forget") or "a concept"
    kind = meta.get("kind", "unlearning")
    tags = ["erase", "concept-erasure" if kind == "unlearning" else "machine-unlearning", "text-to-image"]
    tags += ["diffusers", "lora"] if artifact == "lora" else ["diffusers"]
    header = [
        "---",
        f"base_model: {json.dumps(meta['base_model'])}",
        "library_name: diffusers",
        "license: other  # placeholder: the base model's license applies; set it before publishing",
        "tags:",
        *[f"- {t}" for t in tags],
        "---",
    ]
    made = (record or {}).get("argv")
    body = [
        f"# {meta['base_model']} with `{what}` erased by {meta['method']}",
        "",
        f"- Erased: **{what}**, by **{meta['method']}**, {KIND.get(kind, kind)}.",
        f"- Base model: `{meta['base_model']}` (weights fingerprint `{str(meta.get('base_fingerprint'))[:16]}`).",
        f"- Kept on purpose: {', '.join(concepts.get('preserve') or []) or '-'}.",
        f"- Method settings: `{json.dumps(meta.get('config', {}), sort_keys=True)}`; "
        f"{meta.get('tensors', '?')} tensors, {meta.get('trainable_parameters', '?')} parameters edited.",
        f"- Made with: `erase {shlex.join(made)}`" if made else "- Made with: erase (command not recorded)",
        f"- erase {__version__}, torch {meta.get('versions', {}).get('torch', '?')}, "
        f"diffusers {meta.get('versions', {}).get('diffusers', '?')}.",
        *details,
        "",
        "## Scores",
        "",
        *_scores(record),
        "",
        "## Attacks",
        "",
        *_attacks(attack),
        "",
        "## Use",
        "",
        "```python",
        usage,
        "```",
        "",
        "An erasure lowers how often the model draws the concept under the prompts and attacks above; it "
        "is not a guarantee that no prompt or fine-tuning brings it back.",
    ]
    return "\n".join(header + body) + "\n"
