"""Data components (the ``data:`` section's ``module``), where corpora come from, and tokenizing them.

- ``tokenized``: batches of windows from the tokenize stage's ``.bin`` files (``tokenized``).
- ``mixture``: several tokenized sources at set weights, each tokenized once (``mixture``).
- ``packing``: whole documents packed into windows, for ``data.packing: documents``.
- ``hf_dataset``: a Hugging Face ``datasets`` corpus tokenized on the fly (``hf_dataset``).
- ``grokking``: ``a op b = c`` mod a prime (``grokking``).
- ``arithmetic``: multi-digit multiplication (``arithmetic``).
- ``tasks``: the algorithmic tasks' shared base: generated examples, batches of whole examples.
- ``sources``: a corpus's origin (URL with sha256, local files, ``hf:``, ``gen:``) and its record.
- ``generated``: corpora the repository writes itself (``gen:arithmetic``).
- ``tokenize``: text to ``train.bin`` / ``val.bin`` token files and ``meta.json``.
- ``tokenizers/``: one module per tokenizer (the ``tokenizer:`` section's ``module``).
"""
