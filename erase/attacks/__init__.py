"""The attack registry: the one place an attack is named. Adding an attack is one file and one line.

Each entry names a module under ``erase/attacks/`` (see ``erase.attacks.api`` for what it holds).
Modules are imported when first used, so listing the names (``erase attack --help``) loads no torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType

from erase.errors import EraseError
from erase.settings import build_config


@dataclass(frozen=True)
class Attack:
    name: str
    module_name: str  # a file under erase/attacks/, or a dotted module path
    variant: dict = field(default_factory=dict)  # settings that make this entry (a control) differ
    control: str | None = None  # the entry whose result this attack must beat to have found anything

    @property
    def module(self) -> ModuleType:
        path = self.module_name if "." in self.module_name else f"erase.attacks.{self.module_name}"
        return importlib.import_module(path)

    def config(self, overrides: dict | None = None, *, toy: bool = False):
        """The attack's config: the source's defaults, the toy world's overrides when ``toy``, then
        the user's overrides (unknown names are refused)."""
        fixed = sorted(k for k, v in (overrides or {}).items() if k in self.variant and v != self.variant[k])
        if fixed:
            raise EraseError(
                f"{self.name} is {self.module_name} with {fixed[0]}={self.variant[fixed[0]]!r} (that is what "
                f"makes it {self.name}); set {fixed[0]} only for {self.module_name} (--set {self.module_name}.{fixed[0]}=...)"
            )
        return build_config(self.name, self.module, overrides, toy=toy, variant=self.variant)

    @property
    def settings(self) -> set[str]:
        """The names of the attack's settings (its config's fields)."""
        from dataclasses import fields

        return {f.name for f in fields(self.module.Config)}

    def smoke(self) -> dict:
        return dict(self.module.SMOKE)


REGISTRY: dict[str, Attack] = {
    # No attack: the concept's own prompts (what the erasure gives on its own, in the same table).
    "plain": Attack("plain", "plain"),
    # Learn a new token's embedding on images of the concept, the attacked model frozen.
    "inversion": Attack("inversion", "inversion"),
    # A few words in front of the prompt, chosen by the erased model's own denoising (UnlearnDiffAtk).
    "prompt": Attack("prompt", "prompt", control="prompt-random"),
    # Its control: as many random words, the best by the same loss; the same budget of model calls.
    "prompt-random": Attack("prompt-random", "prompt", {"search": "random"}),
    # Words whose text encoding is nearest the concept's direction; reads the text encoder only.
    "ring-a-bell": Attack("ring-a-bell", "ring_a_bell"),
    # Fine-tune the attacked UNet on the concept's examples for a fixed budget (erase relearn's loop).
    "relearn": Attack("relearn", "relearn"),
    "relearn-sgd": Attack("relearn-sgd", "relearn", {"optimizer": "sgd"}),
}


def get_attack(name: str) -> Attack:
    if name not in REGISTRY:
        raise EraseError(f"unknown attack {name!r}; choose one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


def names() -> list[str]:
    return list(REGISTRY)
