"""Audit grids: the same prompts and seeds drawn by the base, the erased and the relearned models.

Rows are prompts: the erased concept's held-out phrasings (it should be gone), its neighbours (the
rest of its group: they should stay) and unrelated prompts from another group (they should stay).
Columns are models; inside a column each seed is one image, and every column uses the same seeds,
so a cell differs from its neighbour only by the weights. Each image carries the judge's verdict:
the label it sees for the row's group, how sure it is (a CLIP judge's probability, the toy-fit's
fit), and a mark saying whether that is the concept the prompt asked for.

Only one UNet is held: columns are deltas applied to the loaded base and taken off again. Images
are cached on disk by (model fingerprint, prompt, seed, sampling settings), so a second audit of the
same base does not redraw it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from erase import distributed
from erase.concepts import Concept, ConceptBook
from erase.errors import EraseError

ROLES = ("erased", "neighbour", "unrelated")


@dataclass(frozen=True)
class AuditRow:
    prompt: str
    role: str  # one of ROLES
    concept: Concept  # what the prompt asks for; its group's classifier gives the verdict


@dataclass(frozen=True)
class Column:
    label: str
    delta: Path | None  # None: the base model itself
    # An attack's column (built by ``erase.jobs.audit`` from an ``erase attack`` record): the prompt
    # drawn in place of each row's prompt, what the attack puts into the pipeline while drawing (a
    # context manager on the pipeline: a token's embedding), and a tag naming that for the cache.
    prompts: dict[str, str] | None = None
    loaded: Callable | None = None
    tag: str = ""


def _spread(items: Sequence, n: int) -> list:
    """``n`` items evenly spaced through ``items`` (held-out prompts vary fastest in their other
    placeholder, so the first n would all share one phrasing)."""
    if n <= 0:
        return []
    if n >= len(items):
        return list(items)
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


def audit_rows(
    book: ConceptBook,
    target: Concept,
    *,
    n_erased: int = 4,
    n_neighbours: int = 3,
    n_unrelated: int = 2,
) -> list[AuditRow]:
    """Held-out prompts of ``target``, one held-out prompt of each of up to ``n_neighbours`` other
    concepts of its group, and prompts of other groups that do not name the target."""
    rows = [AuditRow(p, "erased", target) for p in _spread(target.heldout, n_erased)]
    neighbours = [c for c in book.concepts.values() if c.group == target.group and c.name != target.name]
    for k, c in enumerate(neighbours[:n_neighbours]):
        # Different phrasings per neighbour, so the grid is not one template repeated.
        rows.append(AuditRow(c.heldout[(k * 5) % len(c.heldout)], "neighbour", c))
    word, used = target.label.lower(), {r.prompt for r in rows}
    unrelated = [
        (p, c)
        for c in book.concepts.values()
        if c.group != target.group
        for p in c.heldout
        if word not in p.lower().replace(",", " ").split() and p not in used
    ]
    rows += [AuditRow(p, "unrelated", c) for p, c in _spread(unrelated, n_unrelated)]
    return rows


def cache_dir() -> Path:
    return Path(os.environ.get("ERASE_CACHE", Path.home() / ".cache" / "erase")) / "images"


def _key(fingerprint: str, prompt: str, seed: int, settings: dict) -> str:
    blob = json.dumps([fingerprint, prompt, seed, settings], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def cached_generate(
    pipe,
    prompts: Sequence[str],
    seeds: Sequence[int],
    *,
    fingerprint: str,
    steps: int,
    guidance: float,
    cache: Path | None,
    progress: bool = False,
    batch_size: int = 32,
    split: bool = False,
) -> tuple[list[Image.Image], int]:
    """``generate`` with an on-disk cache; returns the images (prompt-major) and how many were drawn."""
    from erase.generate import generate_pairs

    settings = {"steps": steps, "guidance": guidance}
    jobs = [(p, s) for p in prompts for s in seeds]
    keys = [_key(fingerprint, p, s, settings) for p, s in jobs]
    found: dict[int, Image.Image] = {}
    if cache is not None:
        for i, k in enumerate(keys):
            f = cache / f"{k}.png"
            if f.is_file():
                with Image.open(f) as im:
                    found[i] = im.convert("RGB")
    todo = [i for i in range(len(jobs)) if i not in found]
    # generate() seeds each image on its own, so drawing only the missing ones changes nothing; under
    # several processes each draws a share and all get every image, and only the main one writes.
    ims = generate_pairs(
        pipe,
        [jobs[i] for i in todo],
        steps=steps,
        guidance=guidance,
        batch_size=batch_size,
        progress=progress,
        split=split,
    )
    for i, im in zip(todo, ims):
        found[i] = im
        if cache is not None and distributed.is_main():
            cache.mkdir(parents=True, exist_ok=True)
            tmp = cache / f".{keys[i]}.{os.getpid()}.png"
            im.save(tmp)
            tmp.replace(cache / f"{keys[i]}.png")
    return [found[i] for i in range(len(jobs))], len(todo)


@contextlib.contextmanager
def delta_applied(pipe, delta: Path | None, base_fingerprint: str) -> Iterator[None]:
    """The base with ``delta`` applied inside the block; the base's own tensors back afterwards."""
    if delta is None:
        yield
        return
    from erase.delta import apply_delta, delta_tensor_names

    named = dict(pipe.unet.named_parameters())
    saved = {n: named[n].detach().clone() for n in delta_tensor_names(delta) if n in named}
    try:
        apply_delta(pipe.unet, delta, base_fingerprint)
        yield
    finally:
        with torch.no_grad():
            for n, v in saved.items():
                named[n].copy_(v)


@torch.no_grad()
def audit(
    pipe,
    judge,
    rows: Sequence[AuditRow],
    columns: Sequence[Column],
    seeds: Sequence[int],
    *,
    base_fingerprint: str,
    steps: int = 25,
    guidance: float = 7.5,
    cache: Path | None = None,
    progress: bool = True,
    batch_size: int = 32,
    split: bool = False,
) -> dict:
    """Draw every (row, column, seed) and classify it (``split``: share the drawing across the
    processes of ``accelerate launch``; every process gets every image). Returns ``{"cells": [...], "images": {...},
    "drawn": n, "cached": n}``; images are keyed by (row index, column index) as lists over seeds."""
    from tqdm.auto import tqdm

    from erase.delta import sha256_of

    if not rows:
        raise EraseError("the audit has no prompts; check the concept file's held-out prompts")
    if not columns:
        raise EraseError("the audit has no models to compare")
    for group in {r.concept.group.name: r.concept.group for r in rows}.values():
        judge.check_group(group)  # before any image is drawn
    seeds = list(seeds)
    cells, images, drawn = [], {}, 0
    prompts = list(dict.fromkeys(r.prompt for r in rows))
    for j, col in enumerate(tqdm(columns, desc="audit", disable=not progress)):
        fp = base_fingerprint if col.delta is None else f"{base_fingerprint}+{sha256_of(col.delta)}"
        fp += f"+{col.tag}" if col.tag else ""
        drawn_prompts = [(col.prompts or {}).get(p, p) for p in prompts]
        loaded = col.loaded(pipe) if col.loaded is not None else contextlib.nullcontext()
        with delta_applied(pipe, col.delta, base_fingerprint), loaded:
            ims, n = cached_generate(
                pipe,
                drawn_prompts,
                seeds,
                fingerprint=fp,
                steps=steps,
                guidance=guidance,
                cache=cache,
                batch_size=batch_size,
                split=split,
            )
        drawn += n
        by_prompt = {p: ims[k * len(seeds) : (k + 1) * len(seeds)] for k, p in enumerate(prompts)}
        for i, row in enumerate(rows):
            group = row.concept.group
            v = judge.verdicts(group, by_prompt[row.prompt])
            images[(i, j)] = by_prompt[row.prompt]
            at = group.labels.index(row.concept.label)
            for s, said, sure, strength in zip(seeds, v.predicted, v.confidence, v.strength):
                cells.append(
                    {
                        "row": i,
                        "prompt": row.prompt,
                        "drawn": (col.prompts or {}).get(row.prompt, row.prompt),
                        "role": row.role,
                        "concept": row.concept.name,
                        "model": col.label,
                        "seed": s,
                        "predicted": said,
                        "confidence": round(float(sure), 3),
                        # CLIP: the concept's probability; toy-fit: its fit.
                        "p_concept": round(float(strength[at]), 3),
                        "present": said == row.concept.label,
                    }
                )
    total = len(prompts) * len(seeds) * len(columns)
    return {"cells": cells, "images": images, "drawn": drawn, "cached": total - drawn}


def presence_table(cells: Sequence[dict], columns: Sequence[Column]) -> dict[str, dict[str, float]]:
    """Share of images per (role, model) in which the judge sees the prompt's concept."""
    return {
        role: {label: round(k / n, 3) for label, (k, n) in by_model.items()}
        for role, by_model in presence_counts(cells, columns).items()
    }


def presence_counts(cells: Sequence[dict], columns: Sequence[Column]) -> dict[str, dict[str, list[int]]]:
    """The same as counts: ``[k, n]`` images per (role, model), k of them showing the concept."""
    out: dict[str, dict[str, list[int]]] = {}
    for role in ROLES:
        for col in columns:
            hits = [c["present"] for c in cells if c["role"] == role and c["model"] == col.label]
            if hits:
                out.setdefault(role, {})[col.label] = [int(sum(hits)), len(hits)]
    return out


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _wrap(draw, text: str, font, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        cand = f"{line} {word}".strip()
        if draw.textlength(cand, font=font) <= width or not line:
            line = cand
        else:
            lines.append(line)
            line = word
    return [*lines, line] if line else lines


def render_grid(
    rows: Sequence[AuditRow],
    columns: Sequence[Column],
    seeds: Sequence[int],
    result: dict,
    *,
    cell: int = 112,
    title: str = "",
) -> Image.Image:
    """The grid as one PNG: a header of model names, a prompt label per row, under each image the
    judge's verdict ("+ red 0.93": it sees the prompt's concept; "- blue 0.80": it sees another)."""
    seeds = list(seeds)
    font, small, big = _font(14), _font(12), _font(18)
    label_w, gap, verdict_h = 230, 12, 18
    col_w = len(seeds) * cell + gap
    head_h = 78 if title else 52
    row_h = cell + verdict_h + 8
    width = label_w + len(columns) * col_w
    height = head_h + len(rows) * row_h + 8
    canvas = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(canvas)
    if title:
        d.text((8, 6), title, fill="black", font=big)
    for j, col in enumerate(columns):
        x = label_w + j * col_w
        for k, line in enumerate(_wrap(d, col.label, small, col_w - gap)[:2]):
            d.text((x, head_h - 44 + 14 * k), line, fill="black", font=small if len(col.label) > 24 else font)
        for s_i, seed in enumerate(seeds):
            d.text((x + s_i * cell, head_h - 14), f"seed {seed}", fill=(110, 110, 110), font=small)
    verdicts = {(c["row"], c["model"], c["seed"]): c for c in result["cells"]}
    role_colour = {"erased": (170, 20, 20), "neighbour": (20, 90, 170), "unrelated": (90, 90, 90)}
    for i, row in enumerate(rows):
        y = head_h + i * row_h
        if i and row.role != rows[i - 1].role:
            d.line([(4, y - 4), (width - 4, y - 4)], fill=(200, 200, 200), width=1)
        d.text((8, y + 4), row.role, fill=role_colour.get(row.role, "black"), font=small)
        for k, line in enumerate(_wrap(d, row.prompt, font, label_w - 16)[:4]):
            d.text((8, y + 22 + 17 * k), line, fill="black", font=font)
        for j, col in enumerate(columns):
            for s_i, (seed, im) in enumerate(zip(seeds, result["images"][(i, j)])):
                x = label_w + j * col_w + s_i * cell
                canvas.paste(im.convert("RGB").resize((cell - 4, cell - 4), Image.Resampling.NEAREST), (x, y))
                v = verdicts[(i, col.label, seed)]
                mark = "+" if v["present"] else "-"
                colour = (0, 120, 0) if v["present"] else (180, 0, 0)
                d.text(
                    (x, y + cell - 2),
                    f"{mark} {v['predicted']} {v['confidence']:.2f}",
                    fill=colour,
                    font=small,
                )
    return canvas
