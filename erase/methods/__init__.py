"""The method registry: the one place a method is named. Adding a method is one file and one line.

Each entry names a module under ``erase/methods/`` (see ``erase.methods.api`` for what it holds) and
the config fields that make this variant (ESD's parameter sets are variants of one method). Modules
are imported when first used, so listing the names (``erase concept --help``) loads no torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType

from erase.errors import EraseError
from erase.settings import build_config


@dataclass(frozen=True)
class Method:
    name: str
    module_name: str  # a file under erase/methods/, or a dotted module path
    variant: dict = field(default_factory=dict)

    @property
    def module(self) -> ModuleType:
        path = self.module_name if "." in self.module_name else f"erase.methods.{self.module_name}"
        return importlib.import_module(path)

    @property
    def kind(self) -> str:
        return self.module.KIND

    def config(self, overrides: dict | None = None, *, toy: bool = False):
        """The method's config: paper defaults, the toy world's overrides when ``toy``, this
        variant's fields, then the user's overrides (unknown names are refused)."""
        return build_config(self.name, self.module, overrides, toy=toy, variant=self.variant)

    def smoke(self) -> dict:
        """The test matrix's overrides: the module's ``SMOKE`` (``config`` adds the variant's fields)."""
        return dict(self.module.SMOKE)


REGISTRY: dict[str, Method] = {
    # Concept-level unlearning: edit with prompts of the concept (and of what to keep).
    "esd-x": Method("esd-x", "esd", {"params": "xattn"}),
    "esd-x-strict": Method("esd-x-strict", "esd", {"params": "xattn-kv"}),
    "esd-u": Method("esd-u", "esd", {"params": "non-xattn"}),
    "esd-all": Method("esd-all", "esd", {"params": "all"}),
    "uce": Method("uce", "uce"),
    "ca": Method("ca", "ablation"),
    # Data-level untraining: edit with a forget set (and most with a retain set) of images.
    "ga": Method("ga", "ga", {"alpha": 0.0}),
    "graddiff": Method("graddiff", "ga", {"alpha": 0.1}),
    "ft": Method("ft", "ft"),
    "rl": Method("rl", "rl", {"saliency": 0.0}),
    "salun": Method("salun", "rl", {"saliency": 0.5}),
    "ieu": Method("ieu", "ieu"),
    "hamu": Method("hamu", "hamu"),
}


def get_method(name: str, kind: str | None = None) -> Method:
    """The registered method ``name``; with ``kind``, one of that kind (the message lists them)."""
    if name not in REGISTRY:
        raise EraseError(f"unknown method {name!r}; choose one of {', '.join(REGISTRY)}")
    method = REGISTRY[name]
    if kind is not None and method.kind != kind:
        level = "concept-level" if method.kind == "unlearning" else "data-level"
        other = "erase concept" if method.kind == "unlearning" else "erase untrain"
        raise EraseError(
            f"{name} is a {level} ({method.kind}) method; use `{other}` for it, or pick {', '.join(names(kind))}"
        )
    return method


def names(kind: str | None = None, *, one_per_file: bool = False) -> list[str]:
    """Registered method names, of one kind when given (imports each module to read its kind);
    ``one_per_file``: only the first variant of each method file (ESD-x for ESD)."""
    out, files = [], set()
    for n, m in REGISTRY.items():
        if (kind is None or m.kind == kind) and not (one_per_file and m.module_name in files):
            out.append(n)
            files.add(m.module_name)
    return out
