"""Tokenizer round trips, offline GPT-2 BPE, and decoding that never crashes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from nanugpt.config.token_meta import TokenMeta
from nanugpt.data.tokenizers.byte import ByteTokenizerOptions
from nanugpt.data.tokenizers.char import CharTokenizer
from nanugpt.data.tokenizers.from_meta import tokenizer_from_meta
from nanugpt.data.tokenizers.tiktoken import GPT2_FILES, TiktokenOptions, seed_gpt2_cache


def test_byte_round_trip_and_specials() -> None:
    tok = ByteTokenizerOptions(module="byte").build()
    text = "naïve café — 猫"
    ids = tok.encode(text)
    assert ids == list(text.encode("utf-8")) and tok.decode(ids) == text
    assert tok.vocab_size == 257 and tok.eot_id == 256
    assert tok.decode([72, 105, 256, 33]) == "Hi<|endoftext|>!"


def test_byte_decode_of_partial_character_does_not_crash() -> None:
    tok = ByteTokenizerOptions(module="byte").build()
    partial = list("é".encode())[:1] + [65]
    assert tok.decode(partial) == "\ufffdA"
    assert tok.decode([999]) == "\ufffd"


def test_char_round_trip_and_unknown_character() -> None:
    tok = CharTokenizer.fit(set("hello world"))
    assert tok.vocab() == sorted(set("hello world"))
    assert tok.decode(tok.encode("hello")) == "hello"
    with pytest.raises(ValueError, match="character 'z' is not in the char vocabulary"):
        tok.encode("zebra")


def test_char_rebuilds_from_meta() -> None:
    meta = TokenMeta(tokenizer={"module": "char"}, vocab_size=3, dtype="uint16", vocab=["a", "b", "\n"])
    tok = tokenizer_from_meta(meta)
    assert tok.encode("ab\n") == [1, 2, 0]


def test_gpt2_offline_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "cache"))  # an empty cache: must be seeded
    tok = TiktokenOptions(module="tiktoken", encoding="gpt2").build()
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.decode([15496, 995]) == "Hello world"
    assert tok.vocab_size == 50257 and tok.eot_id == 50256
    for url, sha256, _ in GPT2_FILES:
        cached = tmp_path / "cache" / hashlib.sha1(url.encode()).hexdigest()
        assert hashlib.sha256(cached.read_bytes()).hexdigest() == sha256


def test_gpt2_cache_with_wrong_file_is_replaced(tmp_path: Path) -> None:
    url = GPT2_FILES[0][0]
    bad = tmp_path / hashlib.sha1(url.encode()).hexdigest()
    bad.write_bytes(b"tampered")
    assert seed_gpt2_cache(tmp_path)
    assert hashlib.sha256(bad.read_bytes()).hexdigest() == GPT2_FILES[0][1]


def test_unknown_tiktoken_encoding_is_a_clear_error() -> None:
    from nanugpt.errors import UserError

    with pytest.raises(UserError, match="tokenizer.encoding"):
        TiktokenOptions(module="tiktoken", encoding="no_such_encoding").build()


def test_hf_tokenizer_from_local_folder(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    from transformers import PreTrainedTokenizerFast

    from nanugpt.data.tokenizers.hf import HFTokenizerOptions

    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel({"[UNK]": 0, "hello": 1, "world": 2}, unk_token="[UNK]"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]").save_pretrained(tmp_path / "tok")
    tok = HFTokenizerOptions(module="hf", name_or_path=str(tmp_path / "tok")).build()
    assert tok.encode("hello world") == [1, 2]
