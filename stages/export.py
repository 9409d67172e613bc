"""Export stage: ``OUT_DIR/model/last.pt`` -> ``OUT_DIR/hf/`` (Hugging Face format).

    python -m stages.export [params.yaml]
    python -m stages.export params.yaml --export.checkpoint best   # or a path to any checkpoint

Writes ``model.safetensors``, ``config.json``, ``generation_config.json`` and
the tokenizer files, so that, offline::

    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained("out/hf")
    tokenizer = AutoTokenizer.from_pretrained("out/hf")

gives the logits of our model and the ids of our tokenizer. ``nanogpt`` is
written as GPT-2, ``tinyllama`` as Llama, ``hf_gpt2`` / ``hf_llama`` as they
are; ``model.pretrained: out/hf`` (hf_gpt2 / hf_llama) starts a new run from
the folder. The tokenizer is rebuilt from the token files' ``meta.json``.
``export.checkpoint`` picks the checkpoint: ``last`` (default), ``best`` (lowest val loss) or a path.
Needs ``transformers`` and ``safetensors`` (``pip install 'nanugpt[hf]'``).
Reads: data.dataset, tokenizer.module, export.checkpoint.
"""

from __future__ import annotations

import sys
from pathlib import Path

from nanugpt.config.schema import Params
from nanugpt.config.token_meta import read_meta
from nanugpt.files.atomic import atomic_dir
from nanugpt.inference.hf_export import NoHFCounterpart, export_checkpoint
from pipeline import paths
from pipeline.cli import stage_main
from pipeline.console_log import tee_console
from pipeline.threads import use_threads

NOT_EXPORTED = "NOT_EXPORTED.txt"


def run(params: Params, data_root: Path | None = None, out_dir: Path | None = None) -> Path:
    """Export the ``export.checkpoint`` checkpoint (``last`` by default) to ``OUT_DIR/hf``; return that folder."""
    use_threads(params.general.threads)
    out = paths.writable(out_dir or paths.out_dir(), "OUT_DIR")
    with paths.held(out, "export"):
        data_dir = paths.tokenized_dir(params, data_root)
        folder = out / "hf"
        try:
            written = export_checkpoint(
                paths.chosen_checkpoint(params.export.checkpoint, out),
                read_meta(data_dir),
                data_dir,
                folder,
                params.general.verify_checkpoints,
            )
        except NoHFCounterpart as exc:  # not an error of the run: say so in the output, keep the pipeline going
            with atomic_dir(folder) as tmp:
                (tmp / NOT_EXPORTED).write_text(f"{exc}\n")
            print(f"note: {exc}; wrote {folder / NOT_EXPORTED}")
            return folder
        print(f"wrote {folder}: {', '.join(written)}")
        return folder


def main(argv: list[str] | None = None) -> int:
    with tee_console(paths.log_file("export")):
        return stage_main(argv, __doc__, run)


if __name__ == "__main__":
    sys.exit(main())
