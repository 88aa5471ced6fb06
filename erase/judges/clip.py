"""CLIP zero-shot judges: the bundled toy CLIP (``toy``), an open_clip model by name
(``NAME:PRETRAINED`` or ``open_clip:NAME:PRETRAINED``, e.g. ``ViT-L-14:openai``), or an open_clip
folder (``open_clip_config.json`` and safetensors weights).

Each group is a softmax over its labels, each label's text embedding averaged over the group's
templates. With ``neutral`` (e.g. "an image") every classifier gets one more label, a whole phrase
of its own, so that an image showing none of the group can say so instead of being forced into one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from erase.errors import EraseError
from erase.judges.api import Judge, Verdicts
from erase.tokens import check_tokenized
from erase.toy import WEIGHTS

PREFIX = "open_clip:"


def accepts(spec: str) -> bool:
    return spec == "toy" or ":" in spec or Path(spec).expanduser().is_dir()


def _name(spec: str) -> tuple[str, str]:
    """``(NAME, PRETRAINED)`` of a hub spec."""
    name, _, pretrained = spec.removeprefix(PREFIX).partition(":")
    return name, pretrained


def check(spec: str, *, neutral: str | None = None) -> None:
    if neutral is not None and not neutral.strip():
        raise EraseError("the judge's neutral label is empty; pass one such as 'an image', or leave it out")
    if spec == "toy" or Path(spec).expanduser().is_dir():
        return
    import open_clip

    name, pretrained = _name(spec)
    if not pretrained:
        raise EraseError(f"judge {spec}: name the pretrained weights too, e.g. {name}:openai")
    if name not in open_clip.list_models():
        raise EraseError(f"judge {spec}: open_clip has no model {name!r}; see open_clip.list_models()")


def cannot_read(spec: str, group) -> str | None:
    return None  # a zero-shot classifier can be built for any group with words for labels


def load(spec: str, *, device: str | None = None, neutral: str | None = None) -> ClipJudge:
    import open_clip

    from erase.models import pick_device

    dev, _ = pick_device(device, "fp32")
    if spec == "toy":
        folder = WEIGHTS / "clip"
        if not (folder / "open_clip_config.json").is_file():
            raise EraseError(f"the bundled toy CLIP is missing from {folder}; reinstall erase")
        model, preprocess, tok = load_toy_clip(folder)
    elif Path(spec).expanduser().is_dir():
        folder = Path(spec).expanduser()
        if not (folder / "open_clip_config.json").is_file():
            raise EraseError(f"judge folder {spec} has no open_clip_config.json; pass an open_clip folder")
        if not sorted(folder.glob("*.safetensors")):
            raise EraseError(
                f"judge folder {spec} has no .safetensors weights; convert the checkpoint "
                "to safetensors (erase never unpickles a checkpoint silently)"
            )
        if (folder / "bpe_vocab.txt.gz").is_file():  # a toy-style judge with its own vocabulary
            model, preprocess, tok = load_toy_clip(folder)
        else:
            model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
            tok = open_clip.get_tokenizer(f"local-dir:{folder}")
    else:
        name, pretrained = _name(spec)
        model, preprocess = _from_hub(spec, name, pretrained)
        tok = open_clip.get_tokenizer(name)
    return ClipJudge(spec, model.eval().to(dev), tok, preprocess, dev, neutral)


def _from_hub(spec: str, name: str, pretrained: str):
    """An open_clip model by name: from the local cache without a network request when it is there;
    else downloaded, but only when the hub answers within seconds (with no network, one line at once
    instead of a minute of retries)."""
    import open_clip
    from huggingface_hub import constants

    def create():
        logging.disable(logging.ERROR)  # open_clip logs its failure too; ours is the one line
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained)
        except Exception as e:
            return None, str(e).splitlines()[0] if str(e) else e.__class__.__name__
        finally:
            logging.disable(logging.NOTSET)
        return (model, preprocess), None

    offline = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True  # the cache only: hf_hub_download makes no request
    try:
        made, why = create()
    finally:
        constants.HF_HUB_OFFLINE = offline
    if made is None and not offline and _reachable(constants.ENDPOINT):
        made, why = create()
    elif made is None:
        why = "not in the local cache, and " + (
            "HF_HUB_OFFLINE is set" if offline else "the hub cannot be reached"
        )
    if made is None:
        raise EraseError(
            f"could not load judge {spec} ({why}); download it where there is a network, or pass a local folder"
        )
    return made


def _reachable(url: str, timeout: float = 3.0) -> bool:
    import socket
    from urllib.parse import urlparse

    u = urlparse(url)
    try:
        socket.create_connection(
            (u.hostname, u.port or (443 if u.scheme == "https" else 80)), timeout
        ).close()
    except OSError:
        return False
    return True


def load_toy_clip(folder: Path):
    """The toy OpenCLIP: model, preprocess, and the project's tokenizer (not CLIP's default BPE)."""
    import open_clip

    from erase.toy.tokenizer import open_clip_tokenizer

    folder = Path(folder)
    if not (folder / "open_clip_model.safetensors").is_file():
        raise EraseError(f"toy CLIP folder {folder} has no open_clip_model.safetensors")
    # local-dir: loads the folder's own checkpoint, preferring safetensors over any pickle.
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    return model.eval(), preprocess, open_clip_tokenizer(folder / "bpe_vocab.txt.gz")


class ClipJudge(Judge):
    """A CLIP model with its tokenizer and image preprocessing; one zero-shot classifier per group,
    built when the group is first read."""

    def __init__(self, spec, model, tokenizer, preprocess, device, neutral: str | None = None):
        self.spec, self.model, self.tokenizer, self.preprocess = spec, model, tokenizer, preprocess
        self.device, self.none = torch.device(device), neutral
        self._classifiers: dict[str, ZeroShotClassifier] = {}

    def classifier(self, group) -> ZeroShotClassifier:
        if group.name not in self._classifiers:
            self._classifiers[group.name] = ZeroShotClassifier.build(
                self.model, self.tokenizer, group, self.preprocess, self.device, self.none
            )
        return self._classifiers[group.name]

    def check_group(self, group) -> None:
        self.classifier(group)  # its labels and templates tokenized and checked

    def check_prompts(self, prompts: Sequence[str]) -> None:
        check_tokenized(self.tokenizer, prompts, reader="judge")

    def verdicts(self, group, images, prompts=None) -> Verdicts:
        clf = self.classifier(group)
        feats = clf.image_features(images)
        probs = clf.probs(features=feats)
        top = probs.argmax(-1)
        return Verdicts(
            predicted=[clf.labels[i] for i in top.tolist()],
            confidence=probs.gather(1, top[:, None])[:, 0].tolist(),
            strength=probs[:, : len(group.labels)].numpy(),
            clip_score=None if prompts is None else clip_score(self, images, prompts, features=feats),
            embeddings=feats.cpu(),
        )


@dataclass
class ZeroShotClassifier:
    """Softmax over a group's labels, each label's text embedding averaged over its templates."""

    model: torch.nn.Module
    group: object
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
        cls, model, tokenizer, group, preprocess, device="cpu", neutral: str | None = None
    ) -> ZeroShotClassifier:
        from open_clip import build_zero_shot_classifier

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
def clip_score(judge: ClipJudge, images, prompts: Sequence[str], features=None) -> float:
    """Mean of 100 * max(cos(image, prompt), 0), the usual CLIP score."""
    check_tokenized(judge.tokenizer, prompts, reader="judge")
    f = (
        features
        if features is not None
        else image_features(judge.model, judge.preprocess, judge.device, images)
    )
    t = F.normalize(judge.model.encode_text(judge.tokenizer(list(prompts)).to(judge.device)).float(), dim=-1)
    return float((100 * (f * t).sum(-1)).clamp(min=0).mean())
