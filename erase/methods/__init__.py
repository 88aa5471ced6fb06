"""The method registry: the one place a method is named. Adding a method is one file and one line.

Each entry names a module (``KIND``, ``Config``, ``TOY`` overrides for the toy world, ``edit``)
and the config fields that make this variant (ESD's parameter sets are variants of one method).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from types import ModuleType

from erase.errors import EraseError
from erase.methods import ablation, esd, ft, ga, hamu, ieu, rl, uce


@dataclass(frozen=True)
class Method:
    name: str
    module: ModuleType
    variant: dict = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.module.KIND

    def config(self, overrides: dict | None = None, *, toy: bool = False):
        """The method's config: paper defaults, the toy world's overrides when ``toy``, this
        variant's fields, then the user's overrides (unknown names are refused)."""
        overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
        known = {f.name for f in fields(self.module.Config)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise EraseError(f"{self.name} has no setting {unknown[0]!r}; it has {', '.join(sorted(known))}")
        values = (dict(self.module.TOY) if toy else {}) | self.variant | overrides
        return self.module.Config(**values)


REGISTRY: dict[str, Method] = {
    "esd-x": Method("esd-x", esd, {"params": "xattn"}),
    "esd-x-strict": Method("esd-x-strict", esd, {"params": "xattn-kv"}),
    "esd-u": Method("esd-u", esd, {"params": "non-xattn"}),
    "esd-all": Method("esd-all", esd, {"params": "all"}),
    "uce": Method("uce", uce),
    "ca": Method("ca", ablation),
    # Data-level untraining: edit with a forget set (and most with a retain set) of images.
    "ga": Method("ga", ga, {"alpha": 0.0}),
    "graddiff": Method("graddiff", ga, {"alpha": 0.1}),
    "ft": Method("ft", ft),
    "rl": Method("rl", rl, {"saliency": 0.0}),
    "salun": Method("salun", rl, {"saliency": 0.5}),
    "ieu": Method("ieu", ieu),
    "hamu": Method("hamu", hamu),
}


def get_method(name: str) -> Method:
    if name not in REGISTRY:
        raise EraseError(f"unknown method {name!r}; choose one of {', '.join(REGISTRY)}")
    return REGISTRY[name]
