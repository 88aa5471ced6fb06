"""erase: remove concepts from text-to-image diffusion models and show that they are gone.

The stages, one module each: ``models`` (load a pipeline and a CLIP judge), ``generate``,
``score`` (zero-shot classifiers with intervals), ``diffusion`` (the one shared loss), and the toy
world under ``erase.toy``. Importing ``erase`` loads nothing heavy.
"""

__version__ = "0.1.0"
