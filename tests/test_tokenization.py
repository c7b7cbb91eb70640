"""The Qwen3 tokenizer built offline from the BPE ranks, and the corpus BPE option."""

import pytest

from category_classification.core.cli import UserError
from category_classification.models.tokenization import (QWEN_VOCAB_SIZE, load_qwen_tokenizer, resolve_tokenizer,
                                                  train_bpe_tokenizer)


@pytest.fixture(scope="module")
def qwen():
    return load_qwen_tokenizer()


def test_qwen_ids_and_len(qwen):
    assert len(qwen) == QWEN_VOCAB_SIZE == 151669
    assert qwen("Hello, world")["input_ids"] == [9707, 11, 1879]
    assert qwen.pad_token == "<|endoftext|>" and qwen.pad_token_id == 151643
    ids = qwen.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>",
                                      "<tool_call>", "<think>", "</think>"])
    assert ids == [151643, 151644, 151645, 151646, 151657, 151667, 151668]


def test_qwen_matches_tiktoken_on_offers(qwen):
    # The reference is tiktoken itself on the same ranks and pattern, after NFC.
    import unicodedata

    import tiktoken

    from category_classification.models.tokenization import _qwen_resources, _read_ranks

    ranks_file, pattern, _ = _qwen_resources()
    enc = tiktoken.Encoding("qwen-ref", pat_str=pattern, mergeable_ranks=_read_ranks(ranks_file),
                            special_tokens={})
    texts = ["Nike Air Max 90 Herren Sneaker Gr. 44,5 – weiß", "Baby-Schlafsack 70cm (0-6 Monate)",
             "  Sterling Silver 925 Ring\n\nsize 7 ", "Cafe\u0301 crème 1234567", "日本語のタイトル 😀 x2"]
    out = qwen(texts)["input_ids"]
    for text, ids in zip(texts, out):
        assert ids == enc.encode_ordinary(unicodedata.normalize("NFC", text))
        assert qwen.decode(ids) == unicodedata.normalize("NFC", text)


def test_qwen_batch_padding_and_truncation(qwen):
    enc = qwen(["a b c d e f g h", "x"], truncation=True, max_length=4, padding=True, return_tensors="pt")
    assert enc["input_ids"].shape == (2, 4)
    assert enc["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 0, 0, 0]]
    assert enc["input_ids"][1, 1:].tolist() == [151643] * 3


def test_qwen_save_and_autotokenizer_roundtrip(qwen, tmp_path):
    from transformers import AutoTokenizer

    qwen.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert len(again) == 151669 and again.pad_token_id == 151643
    assert again("Hello, world")["input_ids"] == [9707, 11, 1879]


def test_bpe_trained_on_corpus_is_small_and_deterministic(tmp_path):
    texts = [f"red leather shoe size {i} for women" for i in range(50)] + \
            [f"silver ring {i} carat with diamond" for i in range(50)]
    a = train_bpe_tokenizer(texts, 320)
    b = train_bpe_tokenizer(texts, 320)
    assert 256 < len(a) <= 320 and a.pad_token_id == 0
    assert a(texts)["input_ids"] == b(texts)["input_ids"]
    assert a.decode(a("silver ring 7")["input_ids"]) == "silver ring 7"
    a.save_pretrained(tmp_path)
    assert resolve_tokenizer(str(tmp_path))("red shoe")["input_ids"] == a("red shoe")["input_ids"]


def test_resolve_errors():
    with pytest.raises(UserError):
        resolve_tokenizer("bpe:abc", ["x"])
    with pytest.raises(UserError):
        resolve_tokenizer("bpe:1000")
    with pytest.raises(UserError):
        resolve_tokenizer("/no/such/tokenizer/dir")
