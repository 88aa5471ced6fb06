"""Scoring: CLIP zero-shot classifiers over concept groups, accuracy with bootstrap intervals,
and CLIP score. Erasure is accuracy on the target's held-out prompts (lower is better);
preservation is accuracy on the other concepts' held-out prompts (higher is better).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from open_clip import build_zero_shot_classifier
from PIL import Image

from erase.concepts import Concept, Group
from erase.generate import generate
from erase.stats import wilson
from erase.tokens import check_pipeline_prompts, check_tokenized


@dataclass
class ZeroShotClassifier:
    """Softmax over a group's labels, each label's text embedding averaged over its templates."""

    model: torch.nn.Module
    group: Group
    weights: torch.Tensor  # (embed_dim, n_labels), columns L2-normalised
    preprocess: object
    device: torch.device
    neutral: str | None = None  # a last column for "none of the group", its text used as given

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.group.labels) + ((self.neutral,) if self.neutral else ())

    @classmethod
    @torch.no_grad()
    def build(
        cls, model, tokenizer, group: Group, preprocess, device="cpu", neutral: str | None = None
    ) -> ZeroShotClassifier:
        if preprocess is None:
            preprocess = toy_preprocess()
        check_tokenized(
            tokenizer, [t.format(label) for label in group.labels for t in group.templates], reader="judge"
        )
        weights = build_zero_shot_classifier(
            model,
            tokenizer,
            list(group.labels),
            list(group.templates),
            num_classes_per_batch=None,
            device=device,
        )
        if neutral:
            # Not through the group's templates ("a nothing shape" would name a shape): the label
            # is a whole phrase of its own, such as "nothing" or "an image".
            check_tokenized(tokenizer, [neutral], reader="judge")
            text = F.normalize(model.encode_text(tokenizer([neutral]).to(device)).float(), dim=-1)
            weights = torch.cat([weights, text.T.to(weights.dtype)], dim=1)
        return cls(model, group, weights, preprocess, torch.device(device), neutral)

    def image_features(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return image_features(self.model, self.preprocess, self.device, images)

    def probs(self, images: Sequence[Image.Image] | None = None, *, features=None) -> torch.Tensor:
        f = self.image_features(images) if features is None else features
        return (100.0 * f @ self.weights.float()).softmax(dim=-1).cpu()

    def predict(self, images: Sequence[Image.Image]) -> list[str]:
        return [self.labels[i] for i in self.probs(images).argmax(-1).tolist()]


def toy_preprocess():
    from torchvision import transforms

    from erase.toy.nets import IMAGE_MEAN, IMAGE_STD
    from erase.toy.world import IMAGE_SIZE

    return transforms.Compose(
        [
            transforms.Resize(IMAGE_SIZE, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(IMAGE_SIZE),
            transforms.ToTensor(),
            transforms.Normalize(IMAGE_MEAN, IMAGE_STD),
        ]
    )


@torch.no_grad()
def image_features(
    model, preprocess, device, images: Sequence[Image.Image], batch: int = 256
) -> torch.Tensor:
    """L2-normalised CLIP image embeddings."""
    feats = []
    for i in range(0, len(images), batch):
        x = torch.stack([preprocess(im.convert("RGB")) for im in images[i : i + batch]])
        feats.append(F.normalize(model.encode_image(x.to(device)).float(), dim=-1))
    return torch.cat(feats)


@torch.no_grad()
def clip_score(judge, images: Sequence[Image.Image], prompts: Sequence[str], features=None) -> float:
    """Mean of 100 * max(cos(image, prompt), 0), the usual CLIP score."""
    check_tokenized(judge.tokenizer, prompts, reader="judge")
    f = (
        features
        if features is not None
        else image_features(judge.model, judge.preprocess, judge.device, images)
    )
    t = F.normalize(judge.model.encode_text(judge.tokenizer(list(prompts)).to(judge.device)).float(), dim=-1)
    return float((100 * (f * t).sum(-1)).clamp(min=0).mean())


def _classifier(judge, concept: Concept, cache: dict) -> ZeroShotClassifier:
    """The zero-shot classifier of ``concept``'s group, built once per group into ``cache``."""
    neutral = getattr(judge, "neutral", None)
    key = (concept.group.name, neutral)
    if key not in cache:
        cache[key] = ZeroShotClassifier.build(
            judge.model, judge.tokenizer, concept.group, judge.preprocess, judge.device, neutral
        )
    return cache[key]


def classify_concept(
    judge,
    concept: Concept,
    images: Sequence[Image.Image],
    prompts: Sequence[str],
    classifiers: dict | None = None,
) -> dict:
    """Accuracy as a count (``hits`` of ``n``) with its Wilson 95% interval (``erase.stats``),
    prediction counts and CLIP score of images meant to show ``concept``."""
    clf = _classifier(judge, concept, {} if classifiers is None else classifiers)
    feats = clf.image_features(images)
    probs = clf.probs(features=feats)
    pred = [clf.labels[i] for i in probs.argmax(-1).tolist()]
    hits = np.array([p == concept.label for p in pred], dtype=float)
    k = int(hits.sum())
    lo, hi = wilson(k, len(images))
    return {
        "concept": concept.name,
        "group": concept.group.name,
        "n": len(images),
        "hits": k,
        "accuracy": float(hits.mean()),
        "ci95": [lo, hi],
        "confidence": float(probs[:, clf.group.labels.index(concept.label)].mean()),
        "predicted": dict(Counter(pred)),  # with the neutral label, if any: "none of these"
        "neutral": clf.neutral,
        "clip_score": clip_score(judge, images, prompts, features=feats),
        # Each image's verdict, in the images' order: a later job that needs a subset of these images
        # (fewer seeds) reads it from a record instead of drawing them again.
        "per_image": hits.astype(int).tolist(),
    }


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
) -> dict:
    """Generate each concept's held-out prompts under ``seeds`` and classify them.

    Returns ``{"concepts": {name: result}, "settings": {...}}``; with ``keep_images`` each result
    also carries its images (not JSON-serialisable; drop them before writing). Under ``accelerate
    launch`` the images are split across processes (see ``erase.generate.generate``) and every
    process returns the same result.
    """
    # Every prompt and classifier is checked before the first image, so that a concept late in
    # the list cannot fail after minutes of generation.
    classifiers: dict = {}
    for concept in concepts:
        check_pipeline_prompts(pipe, concept.heldout)
        check_tokenized(judge.tokenizer, concept.heldout, reader="judge")
        _classifier(judge, concept, classifiers)
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
        res = classify_concept(judge, concept, images, per_image_prompts, classifiers)
        res["prompts"] = prompts  # the order of per_image: prompt-major over the seeds
        if keep_images:
            res["images"] = images
        results[concept.name] = res
    settings = {"seeds": list(seeds), "steps": steps, "guidance": guidance, "judge": judge.spec}
    settings["neutral"] = getattr(judge, "neutral", None)
    return {"concepts": results, "settings": settings}


def format_table(results: dict, title: str = "") -> str:
    rows = [f"{'concept':<12} {'group':<8} {'hits/n':>7} {'accuracy':>9}  {'95% CI':<13} {'CLIP score':>10}"]
    for r in results["concepts"].values():
        lo, hi = r["ci95"]
        count = f"{r['hits']}/{r['n']}"
        rows.append(
            f"{r['concept']:<12} {r['group']:<8} {count:>7} {r['accuracy']:>9.3f}  "
            f"[{lo:.2f}, {hi:.2f}]  {r['clip_score']:>10.1f}"
        )
    return (title + "\n" if title else "") + "\n".join(rows)
