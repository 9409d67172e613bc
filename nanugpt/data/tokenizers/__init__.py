"""Tokenizers: text <-> token ids (``config.protocols.Tokenizer``), one module per ``tokenizer.module`` name.

- ``byte``: the 256 byte values.
- ``char``: the characters of the corpus, fitted on it.
- ``tiktoken``: OpenAI's BPE encodings (GPT-2's works offline).
- ``hf``: a Hugging Face ``tokenizers`` tokenizer.
- ``grokking`` / ``arithmetic``: the algorithmic tasks' symbols.
- ``from_meta``: a tokenizer rebuilt from saved options: a ``meta.json``'s, or a tokenize worker's.
"""
