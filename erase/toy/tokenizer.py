"""A byte-level BPE for the toy world that gives identical ids in open_clip and transformers.

The toy CLIP is trained with open_clip's ``SimpleTokenizer``; its text tower is then converted into
the transformers ``CLIPTextModel`` that the diffusers pipeline calls through ``CLIPTokenizer``. The
conversion reproduces ``encode_text`` only if both tokenizers map a prompt to the same ids, so both
are built from one merge list learned here. The vocabulary follows CLIP's layout: 256 byte symbols,
the same with the end-of-word mark, one entry per merge, then start- and end-of-text (the end token
has the largest id, which open_clip's argmax pooling relies on). Any text still tokenizes (unknown
words fall back to byte pieces); the world's own words are single tokens.
"""

from __future__ import annotations

import gzip
import itertools
from collections import Counter
from pathlib import Path

from open_clip.tokenizer import SimpleTokenizer, bytes_to_unicode

from erase.toy.world import COLORS, HELDOUT_TEMPLATES, SHAPES, STYLES, TRAIN_TEMPLATES

CONTEXT_LENGTH = 16
EOW = "</w>"

# Words a user of the toy world is likely to type, beyond the world's own captions: they get a
# token each (their embeddings are only as meaningful as the CLIP training made them).
_EXTRA_WORDS = [
    "an",
    "image",
    "painting",
    "art",
    "style",
    "styled",
    "with",
    "and",
    "or",
    "not",
    "no",
    "without",
    "of",
    "in",
    "on",
    "the",
    "a",
    "this",
    "that",
    "shape",
    "shapes",
    "object",
    "thing",
    "something",
    "colour",
    "color",
    "colored",
    "coloured",
    "icon",
    "simple",
    "drawing",
    "picture",
    "photo",
    "sketch",
    "orange",
    "purple",
    "pink",
    "black",
    "white",
    "grey",
    "gray",
    "brown",
    "star",
    "hexagon",
    "heart",
    "dog",
    "cat",
    "car",
    "striped",
    "solid",
    "filled",
    "empty",
    "hollow",
    "lines",
    "line",
]


def world_words() -> list[str]:
    words: list[str] = []
    for text in TRAIN_TEMPLATES + HELDOUT_TEMPLATES:
        words += text.replace("{c}", "").replace("{s}", "").replace(",", " ").split()
    words += list(COLORS) + list(SHAPES) + list(STYLES) + _EXTRA_WORDS
    return sorted(set(words))


def learn_merges(words: list[str]) -> list[tuple[str, str]]:
    """Classic BPE training on a word list until every word is a single symbol.

    Greedy encoding with these merges (lowest rank first) replays exactly the training
    segmentation, so each listed word becomes one token.
    """
    enc = bytes_to_unicode()
    seqs = []
    for w in words:
        chars = [enc[b] for b in w.encode("utf-8")]
        seqs.append([*chars[:-1], chars[-1] + EOW])
    merges: list[tuple[str, str]] = []
    while True:
        pairs: Counter[tuple[str, str]] = Counter()
        for seq in seqs:
            for a, b in itertools.pairwise(seq):
                pairs[(a, b)] += 1
        if not pairs:
            return merges
        # Ties broken by the pair itself so the result never depends on dict order.
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        joined = best[0] + best[1]
        for k, seq in enumerate(seqs):
            out, i = [], 0
            while i < len(seq):
                if i + 1 < len(seq) and (seq[i], seq[i + 1]) == best:
                    out.append(joined)
                    i += 2
                else:
                    out.append(seq[i])
                    i += 1
            seqs[k] = out


def vocab_from_merges(merges: list[tuple[str, str]]) -> list[str]:
    base = list(bytes_to_unicode().values())
    vocab = base + [v + EOW for v in base] + ["".join(m) for m in merges]
    if len(set(vocab)) != len(vocab):
        raise ValueError("two merges produce the same token; the vocabulary would be ambiguous")
    return vocab


def write_bpe(merges: list[tuple[str, str]], path: Path) -> None:
    """open_clip's format: a header line, then one merge per line (no trailing newline)."""
    text = "#version: erase-toy\n" + "\n".join(f"{a} {b}" for a, b in merges)
    path.write_bytes(gzip.compress(text.encode("utf-8"), mtime=0))


def open_clip_tokenizer(bpe_path: Path) -> SimpleTokenizer:
    return SimpleTokenizer(bpe_path=str(bpe_path), context_length=CONTEXT_LENGTH)


def hf_tokenizer(merges: list[tuple[str, str]]):
    """A transformers ``CLIPTokenizer`` with the same ids as ``open_clip_tokenizer``."""
    from transformers import CLIPTokenizer

    vocab = [*vocab_from_merges(merges), "<|startoftext|>", "<|endoftext|>"]
    tok = CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=list(merges))
    tok.model_max_length = CONTEXT_LENGTH
    return tok


def vocab_size(merges: list[tuple[str, str]]) -> int:
    return len(vocab_from_merges(merges)) + 2
