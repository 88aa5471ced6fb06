"""Concept definitions as data: labels, classifier templates, erasure prompts, held-out prompts.

A concept file (``prompts/NAME.yaml``) declares groups, each a zero-shot classifier over its labels;
every label is a concept. ``load_concepts("toy")`` reads ``prompts/toy.yaml``; a path reads that file.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import string
from dataclasses import dataclass
from pathlib import Path

import yaml

from erase.errors import EraseError

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"
_FIELD = re.compile(r"{(\w+)}")


@dataclass(frozen=True)
class Group:
    """A classifier: labels, and templates such as ``"a {} shape"`` averaged per label."""

    name: str
    labels: tuple[str, ...]
    templates: tuple[str, ...]


@dataclass(frozen=True)
class Concept:
    name: str
    group: Group
    label: str
    prompts: tuple[str, ...]  # what an erasure method trains on
    heldout: tuple[str, ...]  # what scoring generates from
    anchors: tuple[str, ...] = ()  # one per prompt: the same prompt without the concept
    bindings: tuple[dict, ...] = ()  # one per prompt: the values its placeholders took


@dataclass(frozen=True)
class ConceptBook:
    path: Path
    sha256: str
    groups: dict[str, Group]
    concepts: dict[str, Concept]

    def get(self, name: str) -> Concept:
        name = name.strip()
        if not name:
            raise EraseError("the concept name is empty; name one, e.g. --concept red")
        if name not in self.concepts:
            raise EraseError(
                f"concept {name!r} is not defined in {self.path}; defined: {', '.join(sorted(self.concepts))}"
            )
        return self.concepts[name]


def _bindings(template: str, env: dict[str, list[str]], where: str) -> list[dict[str, str]]:
    names = list(dict.fromkeys(_FIELD.findall(template)))
    unknown = [n for n in names if n not in env]
    if unknown:
        raise EraseError(f"{where}: prompt {template!r} uses {{{unknown[0]}}}, which is not in vars")
    return [dict(zip(names, values)) for values in itertools.product(*(env[n] for n in names))]


def _expand(template: str, env: dict[str, list[str]], where: str) -> list[str]:
    return [template.format(**b) for b in _bindings(template, env, where)]


def _prompts_and_anchors(spec: dict, env, where: str) -> tuple[tuple, tuple, tuple]:
    """Expand ``prompts``; ``anchors`` (optional) are aligned templates filled with the same values."""
    templates = _strings(spec.get("prompts"), f"{where}.prompts")
    anchor_templates = spec.get("anchors")
    if anchor_templates is not None:
        anchor_templates = _strings(anchor_templates, f"{where}.anchors")
        if len(anchor_templates) != len(templates):
            raise EraseError(f"{where}.anchors must have one entry per prompt template")
    prompts, anchors, bindings = [], [], []
    for i, t in enumerate(templates):
        for b in _bindings(t, env, where):
            prompts.append(t.format(**b))
            bindings.append(b)
            if anchor_templates is not None:
                try:
                    anchors.append(anchor_templates[i].format(**b))
                except KeyError as e:
                    raise EraseError(f"{where}.anchors[{i}] uses {e}, which its prompt does not") from None
    return tuple(prompts), tuple(anchors), tuple(bindings)


def _strings(value, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise EraseError(f"{where} must be a non-empty list of non-empty strings")
    return tuple(value)


def _concept(name: str, group: Group, label: str, spec: dict, env_vars: dict, where: str) -> Concept:
    env = env_vars | {"concept": [label]}
    prompts, anchors, bindings = _prompts_and_anchors(spec, env, where)
    heldout = tuple(
        p for t in _strings(spec.get("heldout"), f"{where}.heldout") for p in _expand(t, env, where)
    )
    return Concept(name, group, label, prompts, heldout, anchors, bindings)


def resolve_prompt_file(spec: str | Path) -> Path:
    p = Path(spec)
    if p.suffix in (".yaml", ".yml") or p.exists():
        path = p
    else:
        path = PROMPTS_DIR / f"{spec}.yaml"
    if not path.is_file():
        raise EraseError(
            f"concept file {spec} not found (looked for {path}); pass a YAML file or a name under prompts/"
        )
    return path


def load_concepts(spec: str | Path = "toy") -> ConceptBook:
    path = resolve_prompt_file(spec)
    raw_bytes = path.read_bytes()
    try:
        data = yaml.safe_load(raw_bytes)
    except yaml.YAMLError as e:
        raise EraseError(f"concept file {path} is not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("groups"), dict) or not data["groups"]:
        raise EraseError(f"concept file {path} needs a non-empty 'groups' mapping")
    env_vars = {k: list(_strings(v, f"{path}: vars.{k}")) for k, v in (data.get("vars") or {}).items()}

    groups, concepts = {}, {}
    for gname, g in data["groups"].items():
        where = f"{path}: groups.{gname}"
        if not isinstance(g, dict):
            raise EraseError(f"{where} must be a mapping with labels and templates")
        labels = _strings(g.get("labels"), f"{where}.labels")
        templates = _strings(g.get("templates"), f"{where}.templates")
        for t in templates:
            fields = [f for _, f, _, _ in string.Formatter().parse(t) if f is not None]
            if fields != [""]:
                raise EraseError(f"{where}.templates: {t!r} must contain exactly one '{{}}'")
        group = Group(gname, labels, templates)
        groups[gname] = group
        for label in labels:
            concepts[label] = _concept(label, group, label, g, env_vars, where)

    for cname, c in (data.get("concepts") or {}).items():
        where = f"{path}: concepts.{cname}"
        if not isinstance(c, dict) or c.get("group") not in groups:
            raise EraseError(f"{where} needs a 'group' among {', '.join(groups)}")
        group = groups[c["group"]]
        label = c.get("label", cname)
        if label not in group.labels:
            raise EraseError(f"{where}: label {label!r} is not among {group.name}'s labels")
        concepts[cname] = _concept(cname, group, label, c, env_vars, where)
    return ConceptBook(path, hashlib.sha256(raw_bytes).hexdigest(), groups, concepts)


def read_prompt_list(path: str | Path) -> list[str]:
    """One prompt per line; blank lines and ``#`` comments are skipped."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise EraseError(f"cannot read prompt file {p} ({e.__class__.__name__}); check the path") from None
    prompts = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not prompts:
        raise EraseError(f"prompt file {p} has no prompts; write one prompt per line")
    return prompts
