import pytest

from erase.toy.tokenizer import (
    hf_tokenizer,
    learn_merges,
    open_clip_tokenizer,
    world_words,
    write_bpe,
)


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    merges = learn_merges(world_words())
    path = tmp_path_factory.mktemp("bpe") / "bpe.txt.gz"
    write_bpe(merges, path)
    return open_clip_tokenizer(path), hf_tokenizer(merges)


@pytest.mark.parametrize(
    "text",
    [
        "a red circle",
        "a drawing of a blue square in stripes style",
        "yellow cross, simple icon",
        "An UNSEEN Zebra!! 1889",
        "",
        "a very long prompt that certainly runs past sixteen tokens of context",
    ],
)
def test_open_clip_and_transformers_give_the_same_ids(tokenizers, text):
    oc, hf = tokenizers
    a = oc([text])[0].tolist()
    b = hf(text, padding="max_length", max_length=16, truncation=True).input_ids
    n = a.index(oc.eot_token_id) + 1
    assert a[:n] == b[:n]  # identical up to end-of-text; only the padding id differs


def test_world_words_are_single_tokens(tokenizers):
    oc, _ = tokenizers
    for w in world_words():
        assert len(oc.encode(w)) == 1, w


def test_end_of_text_has_the_largest_id(tokenizers):
    oc, hf = tokenizers
    assert oc.eot_token_id == oc.vocab_size - 1 == hf.eos_token_id
