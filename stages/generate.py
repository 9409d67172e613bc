"""Generate stage: ``OUT_DIR/model/last.pt`` -> ``OUT_DIR/samples.txt``.

    python -m stages.generate [params.yaml] [--generate.prompt "ROMEO:"] [--generate.seed 7]
    python -m stages.generate params.yaml --generate.checkpoint best   # or a path to any checkpoint

Samples ``generate.num_samples`` continuations of ``generate.prompt`` (or
``FILE:path``) with ``temperature``, ``top_k`` and ``top_p``; the same
``generate.seed`` gives the same text. ``generate.checkpoint`` picks the
checkpoint: ``last`` (default), ``best`` (lowest val loss) or a path. The tokenizer is rebuilt from the
token files' ``meta.json``. With ``logging.wandb`` the samples also go to the
training run in W&B. Reads: generate.*, general.device_type, general.project_name,
general.run_name, logging.wandb, data.dataset, tokenizer.module.
"""

from __future__ import annotations

import sys
from pathlib import Path

from nanugpt.checkpoint.store import check_vocab, load_trained_model
from nanugpt.config.schema import Params
from nanugpt.config.token_meta import read_meta
from nanugpt.data.packing import mask_model_documents
from nanugpt.data.tokenizers.from_meta import tokenizer_from_meta
from nanugpt.distributed.device import pick_device
from nanugpt.files.atomic import write_text
from nanugpt.inference.generate import GenerateError, read_prompt, sample
from nanugpt.metrics.sinks import WandbSink, check_sinks
from pipeline import paths
from pipeline.cli import stage_main
from pipeline.console_log import tee_console
from pipeline.threads import use_threads

SEPARATOR = "\n---------------\n"


def run(params: Params, data_root: Path | None = None, out_dir: Path | None = None) -> list[str]:
    """Sample from ``generate.checkpoint`` (``last`` by default); write the samples to ``samples.txt``, return them."""
    use_threads(params.general.threads)
    out = paths.writable(out_dir or paths.out_dir(), "OUT_DIR")
    with paths.held(out, "generate"):
        check_sinks(params)
        prompt = read_prompt(params.generate.prompt)  # a bad FILE: prompt fails before the model is loaded
        device = pick_device(params.general.device_type)
        model, trained, state = load_trained_model(
            paths.chosen_checkpoint(params.generate.checkpoint, out), device, params.general.verify_checkpoints
        )
        data_dir = paths.tokenized_dir(params, data_root)
        meta = read_meta(data_dir)
        check_vocab(state, meta, data_dir)
        # as trained; decoders sample with a key/value cache, which is never masked (one prompt is one document)
        mask_model_documents(model, trained.data, eot_id=meta.eot_id, module=trained.model.module)
        tokenizer = tokenizer_from_meta(meta)
        try:
            prompt_ids = tokenizer.encode(prompt)
        except ValueError as exc:
            raise GenerateError(f"generate.prompt: {exc}") from None
        samples = [
            prompt + tokenizer.decode(ids)
            for ids in sample(model, prompt_ids, params.generate, state["vocab_size"], device)
        ]
        write_text(paths.samples_file(out), SEPARATOR.join(samples) + "\n")
        if params.logging.wandb:
            sink = WandbSink(
                params.general.project_name, params.general.run_name, params.to_dict(), out, stage="generate"
            )
            sink.log_samples(samples)
            sink.close()
        print(SEPARATOR.join(samples))
        return samples


def main(argv: list[str] | None = None) -> int:
    with tee_console(paths.log_file("generate")):
        return stage_main(argv, __doc__, run)


if __name__ == "__main__":
    sys.exit(main())
