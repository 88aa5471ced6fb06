"""Prompts a tokenizer would silently change are refused before any image is made.

A CLIP tokenizer never fails: it drops characters it cleans away (ftfy removes control characters
and byte-order marks), turns ``<|endoftext|>`` typed into a prompt into the real end token, and cuts
everything past its context length (16 tokens in the toy world, 77 in Stable Diffusion). A concept
word lost that way is not erased or scored at all, and nothing says so; so every word of a prompt
must survive its tokenizer, or the prompt is refused with one line saying which word and why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from erase.errors import EraseError

Codec = tuple[Callable[[str], list[int]], Callable[[list[int]], str], int]


def _codec(tokenizer) -> Codec | None:
    """(encode without special tokens, decode, how many content tokens fit), or None when the
    tokenizer is of a kind this module does not know (it is then not checked)."""
    if hasattr(tokenizer, "sot_token_id") and hasattr(tokenizer, "encode"):  # open_clip's own BPE
        return tokenizer.encode, tokenizer.decode, tokenizer.context_length - 2
    inner = getattr(tokenizer, "tokenizer", None)
    if inner is not None and hasattr(tokenizer, "context_length"):  # open_clip around transformers
        tok, limit = inner, tokenizer.context_length
    elif hasattr(tokenizer, "model_max_length") and hasattr(tokenizer, "num_special_tokens_to_add"):
        tok, limit = tokenizer, tokenizer.model_max_length
    else:
        return None
    return (
        lambda text: tok.encode(text, add_special_tokens=False),
        lambda ids: tok.decode(ids, skip_special_tokens=True),
        limit - tok.num_special_tokens_to_add(),
    )


def _squash(text: str) -> str:
    # Tokenizers lowercase and respace ("circle," decodes as "circle ,"); compare without either.
    return "".join(text.lower().split())


def lost_words(tokenizer, prompt: str) -> tuple[list[str], int, int]:
    """The words of ``prompt`` that its tokenizer drops or cuts, with the prompt's token count and
    how many tokens fit; ``([], n, fit)`` when every word survives."""
    codec = _codec(tokenizer)
    if codec is None:
        return [], 0, 0
    encode, decode, fit = codec
    ids = encode(prompt)
    kept = _squash(decode(ids[:fit]))
    lost, pos = [], 0
    for word in prompt.split():
        piece = _squash(decode(encode(word)))
        at = kept.find(piece, pos) if piece else -1
        if at < 0:
            lost.append(word)
        else:
            pos = at + len(piece)
    return lost, len(ids), fit


def check_tokenized(tokenizer, prompts: Sequence[str], *, reader: str) -> None:
    """Refuse a prompt that tokenizes to nothing or loses a word; ``reader`` names the model that
    reads the tokens (``"text encoder"``, ``"judge"``) in the message."""
    for prompt in dict.fromkeys(prompts):
        lost, n, fit = lost_words(tokenizer, prompt)
        if not lost:
            continue
        if len(lost) == len(prompt.split()):
            raise EraseError(
                f"prompt {prompt!r} tokenizes to nothing for the {reader}: its tokenizer drops every "
                "character; write it with words"
            )
        if n > fit:
            raise EraseError(
                f"prompt {prompt!r} is {n + 2} tokens but the {reader} reads {fit + 2}, so "
                f"{' '.join(lost)!r} would be cut off; shorten it"
            )
        raise EraseError(
            f"prompt {prompt!r} loses {lost[0]!r} in the {reader}'s tokenizer (it drops those "
            "characters or reads them as a special token); remove them or rename the concept"
        )


def check_pipeline_prompts(pipe, prompts: Sequence[str]) -> None:
    """Every text encoder of ``pipe`` (SDXL has two) reads every word of every prompt."""
    for name in ("tokenizer", "tokenizer_2"):
        tok = getattr(pipe, name, None)
        if tok is not None:
            check_tokenized(tok, prompts, reader="text encoder")
