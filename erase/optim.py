"""Optimizers by name, relearning's default learning rate for each and what relearning may train:
torch-free, so that the CLI's help and the job configs read them without loading torch."""

from __future__ import annotations

OPTIMIZERS = ("sgd", "sgdm", "adam", "adamw", "lion", "signsgd")  # built by erase.train.make_optimizer

# Relearning learning rates per optimizer: on the toy world (all parameters, batch 4) SGD at 0.1
# wrecks the model and at 0.5 diverges; 0.03 is the largest that learns. Adam at 3e-4 is the setting
# that brought an erased circle back within 12 steps when this was first measured.
DEFAULT_LRS: dict[str, tuple[float, ...]] = {
    "sgd": (0.03,),
    "sgdm": (0.003,),
    "adam": (3e-4,),
    "adamw": (3e-4,),
    # Sign-based steps move every coordinate by lr, so their rates sit ~10x below Adam's
    # (Lion paper's advice); starting points for a sweep, like the rest.
    "lion": (3e-5,),
    "signsgd": (3e-5,),
}

# What a relearning run trains: every UNet parameter, the cross-attention layers, their keys and
# values, everything else, or the tensors the edit changed.
RELEARN_PARAMS = ("all", "xattn", "xattn-kv", "non-xattn", "changed")
