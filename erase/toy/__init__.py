"""The bundled toy world: renderer, tokenizer, architectures, training recipe and trained weights."""

from pathlib import Path

WEIGHTS = Path(__file__).parent / "weights"
"""Folder of the shipped toy world: ``pipeline/`` (diffusers), ``clip/`` (OpenCLIP), manifest."""
