"""Scoring: what a judge (``erase.judges``) sees in the images of each concept's held-out prompts,
as counts with Wilson intervals, and the CLIP score where the judge has one. Erasure is accuracy on
the target's held-out prompts (lower is better); preservation is accuracy on the other concepts'
held-out prompts (higher is better).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
from PIL import Image

from erase.concepts import Concept
from erase.generate import generate
from erase.stats import wilson
from erase.tokens import check_pipeline_prompts


def classify_concept(
    judge,
    concept: Concept,
    images: Sequence[Image.Image],
    prompts: Sequence[str],
    *,
    embeddings: bool = False,
) -> dict:
    """Accuracy as a count (``hits`` of ``n``) with its Wilson 95% interval (``erase.stats``),
    what the judge saw instead, and the CLIP score (CLIP judges) of images meant to show ``concept``;
    with ``embeddings``, the judge's image embeddings too (not JSON: ``take_embeddings`` removes them)."""
    v = judge.verdicts(concept.group, images, prompts)
    hits = np.array([p == concept.label for p in v.predicted], dtype=float)
    k = int(hits.sum())
    lo, hi = wilson(k, len(images))
    return {
        "concept": concept.name,
        "group": concept.group.name,
        "n": len(images),
        "hits": k,
        "accuracy": float(hits.mean()),
        "ci95": [lo, hi],
        # CLIP: the mean probability of the concept's label; toy-fit: its mean fit.
        "confidence": float(v.strength[:, concept.group.labels.index(concept.label)].mean()),
        "predicted": dict(Counter(v.predicted)),  # with the judge's "none", if any
        "neutral": judge.none,
        "clip_score": v.clip_score,
        # Each image's verdict, in the images' order: a later job that needs a subset of these images
        # (fewer seeds) reads it from a record instead of drawing them again.
        "per_image": hits.astype(int).tolist(),
    } | ({"embeddings": v.embeddings} if embeddings and v.embeddings is not None else {})


def score_concepts(
    pipe,
    judge,
    concepts: Sequence[Concept],
    *,
    seeds: Sequence[int],
    steps: int = 25,
    guidance: float = 7.5,
    batch_size: int = 32,
    progress: bool = True,
    keep_images: bool = False,
    embeddings: bool = False,
) -> dict:
    """Generate each concept's held-out prompts under ``seeds`` and classify them.

    Returns ``{"concepts": {name: result}, "settings": {...}}``; with ``keep_images`` each result
    also carries its images, with ``embeddings`` the judge's image embeddings (neither is JSON: drop
    them before writing; ``take_embeddings``). Under ``accelerate
    launch`` the images are split across processes (see ``erase.generate.generate``) and every
    process returns the same result.
    """
    # Every prompt and classifier is checked before the first image, so that a concept late in
    # the list cannot fail after minutes of generation.
    for concept in concepts:
        check_pipeline_prompts(pipe, concept.heldout)
        judge.check_prompts(concept.heldout)
        judge.check_group(concept.group)
    results = {}
    for concept in concepts:
        prompts = list(concept.heldout)
        images = generate(
            pipe,
            prompts,
            seeds,
            steps=steps,
            guidance=guidance,
            batch_size=batch_size,
            progress=progress,
            split=True,
        )
        per_image_prompts = [p for p in prompts for _ in seeds]
        res = classify_concept(judge, concept, images, per_image_prompts, embeddings=embeddings)
        res["prompts"] = prompts  # the order of per_image: prompt-major over the seeds
        if keep_images:
            res["images"] = images
        results[concept.name] = res
    settings = {"seeds": list(seeds), "steps": steps, "guidance": guidance, "judge": judge.spec}
    settings["neutral"] = judge.none
    return {"concepts": results, "settings": settings}


def take_embeddings(scores: dict | None) -> dict:
    """Remove the image embeddings from ``score_concepts``' results (before they are written) and
    return them by concept; empty for a judge without an image encoder."""
    if scores is None:
        return {}
    return {n: r.pop("embeddings") for n, r in scores["concepts"].items() if "embeddings" in r}


def distribution_shift(reference: dict, other: dict) -> dict | None:
    """CMMD (``erase.distribution``) between two models' images of each concept, from their embeddings
    (``take_embeddings``): same prompts and seeds, so the difference is the models'. None when the judge
    has no image encoder."""
    from erase.distribution import cmmd

    shared = [n for n in reference if n in other]
    return {n: cmmd(reference[n], other[n]) for n in shared} or None


def format_shift(shift: dict | None, roles: dict[str, str] | None = None) -> str:
    """One line per concept: CMMD, the permutation null's 95th percentile, and what that says."""
    if not shift:
        return "CMMD: not measured (the judge has no image encoder; a CLIP judge has one)"
    lines = ["CMMD (x1000, CLIP image embeddings), with its permutation null's 95th percentile:"]
    for name, r in shift.items():
        said = "no difference within noise" if r["cmmd"] <= r["null_95"] else "the models differ"
        role = f" ({roles[name]})" if roles and name in roles else ""
        lines.append(
            f"  {name}{role}: {r['cmmd']:.3f} (null 95%: {r['null_95']:.3f}, p={r['p_value']:.3f}): {said}"
        )
    return "\n".join(lines)


def format_table(results: dict, title: str = "") -> str:
    rows = [f"{'concept':<12} {'group':<8} {'hits/n':>7} {'accuracy':>9}  {'95% CI':<13} {'CLIP score':>10}"]
    for r in results["concepts"].values():
        lo, hi = r["ci95"]
        count = f"{r['hits']}/{r['n']}"
        cs = "-" if r.get("clip_score") is None else f"{r['clip_score']:.1f}"  # a judge without one
        rows.append(
            f"{r['concept']:<12} {r['group']:<8} {count:>7} {r['accuracy']:>9.3f}  [{lo:.2f}, {hi:.2f}]  {cs:>10}"
        )
    return (title + "\n" if title else "") + "\n".join(rows)
