"""The model catalog: each registered model builds from params, trains, and keeps its promises.

nanogpt_modern, tinyllama and tiny_transformer run on CPU here; te_llama3 is
checked for its clear refusal without TransformerEngine or a GPU, and for real
where both are present.
"""

from __future__ import annotations

import csv
import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_params

from nanugpt.config.params import ParamsError, validate_params
from nanugpt.config.schema import GenerateParams, LossOptions, Params
from nanugpt.errors import UserError
from nanugpt.inference.generate import sample
from nanugpt.models.layers import apply_rotary
from nanugpt.models.nanogpt_modern import NanoGPTModernOptions, ShortConv
from nanugpt.models.te_llama3 import TE_INSTALL, TELlama3Options, unavailable_reason
from nanugpt.models.tiny_transformer import TinyTransformerOptions
from nanugpt.models.tinyllama import TinyLlamaOptions
from nanugpt.ops.cross_entropy import KernelSizes, soft_cap
from nanugpt.ops.relu_squared import relu_squared
from nanugpt.ops.rms_norm import rms_norm
from nanugpt.optim.losses import Loss
from nanugpt.optim.muon import split_params
from stages import tokenize, train

VOCAB = 65  # padded to 128 by the models that pad to a multiple of 64

MODERN = {"module": "nanogpt_modern", "n_layer": 2, "n_head": 2, "n_embd": 32, "context_length": 16}
CPU_MODELS: dict[str, tuple[dict[str, Any], type, int]] = {  # name: (model section, options class, logits width)
    "nanogpt_modern": (MODERN, NanoGPTModernOptions, 128),
    "nanogpt_modern_short_conv": ({**MODERN, "short_conv": 3}, NanoGPTModernOptions, 128),
    "tinyllama": (
        {
            "module": "tinyllama",
            "n_layer": 2,
            "n_head": 4,
            "n_kv_head": 2,
            "n_embd": 32,
            "intermediate_size": 64,
            "context_length": 16,
        },
        TinyLlamaOptions,
        128,
    ),
    "tiny_transformer": (
        {"module": "tiny_transformer", "n_layer": 2, "n_head": 2, "n_embd": 32, "context_length": 16},
        TinyTransformerOptions,
        VOCAB,
    ),
}
CACHED_MODELS = ["nanogpt_modern", "nanogpt_modern_short_conv", "tinyllama"]
TE_READY = importlib.util.find_spec("transformer_engine") is not None and torch.cuda.is_available()


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread: these models are too small to gain from more, and spare cores may be busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def params_for(model: dict[str, Any], source: Path | str = "unused.txt", **sections: dict[str, Any]) -> Params:
    """Validated params of the tiny experiment with its ``model:`` section replaced by ``model``."""
    tree = tiny_params(source, **sections)
    tree["model"] = dict(model)
    return validate_params(tree, "test params")


def build(name: str, **overrides: Any) -> torch.nn.Module:
    """Model ``name`` built through the registry and its options class, with a fixed seed."""
    params = params_for({**CPU_MODELS[name][0], **overrides})
    torch.manual_seed(0)
    return params.model.build(VOCAB)


def randomize(model: torch.nn.Module) -> torch.nn.Module:
    """Give every weight a random value, so zero-initialised layers cannot hide a wrong computation."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model


def train_losses(out_dir: Path) -> list[float]:
    with open(out_dir / "plots" / "train.csv") as f:
        return [float(row["train_loss"]) for row in csv.DictReader(f)]


@pytest.mark.parametrize("name", list(CPU_MODELS))
def test_builds_from_params_forward_backward(name: str) -> None:
    section, options_cls, width = CPU_MODELS[name]
    params = params_for(section)
    assert type(params.model) is options_cls  # the registry resolved the short name
    torch.manual_seed(0)
    model = params.model.build(VOCAB)
    idx = torch.randint(0, VOCAB, (3, 10))
    logits = model(idx)
    assert logits.shape == (3, 10, width)
    F.cross_entropy(logits.view(-1, width), torch.randint(0, VOCAB, (30,))).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.flops_per_token() > 6 * model.num_params()


@pytest.mark.parametrize("name", list(CPU_MODELS))
def test_loss_falls_in_the_train_stage(name: str, tmp_path: Path, corpus: Path) -> None:
    params = params_for(
        CPU_MODELS[name][0],
        corpus,
        training={"max_steps": 30, "log_every": 10, "checkpoint_every": 0, "peak_flops": 1e12},
        eval={"eval_every": 0, "eval_iters": 1},
    )
    tokenize.run(params, data_root=tmp_path / "data")
    summary = train.run(params, data_root=tmp_path / "data", out_dir=tmp_path / "out")
    losses = train_losses(tmp_path / "out")
    assert len(losses) == 30 and summary["step"] == 30
    assert losses[-1] < losses[0] - 0.5, (losses[0], losses[-1])


@pytest.mark.parametrize("name", CACHED_MODELS)  # the DecoderMixin models (nanogpt: test_model.py)
def test_hidden_states_and_linear_head_give_the_logits(name: str) -> None:
    model = randomize(build(name))
    idx = torch.randint(0, VOCAB, (2, 16))
    weight, cap = model.linear_head()
    assert cap == (15.0 if name.startswith("nanogpt_modern") else None)
    torch.testing.assert_close(soft_cap(model(idx, hidden_only=True) @ weight.t(), cap), model(idx))


HEAD_KERNELS: list[str] = []  # the backward of each loss that ChunkedEverywhereLoss.from_hidden returned


class ChunkedEverywhereLoss(Loss):
    """The autoregressive loss with the CPU kernels chosen even for small logits; notes the head's kernel."""

    def __init__(self) -> None:
        super().__init__(sizes=KernelSizes(cpu_chunked_from=0))

    def from_hidden(
        self, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, cap: float | None = None
    ) -> torch.Tensor:
        loss = super().from_hidden(hidden, weight, targets, cap)
        HEAD_KERNELS.append(type(loss.grad_fn).__name__)
        return loss


class ChunkedEverywhereOptions(LossOptions):
    """A user's own loss component, named by import path in the params."""

    def build(self) -> Loss:
        return ChunkedEverywhereLoss()


def test_fused_head_trains_like_the_unfused_one(tmp_path: Path, corpus: Path) -> None:
    """The train step's loss with the head fused into it (chosen here on small logits) gives the same run."""
    sections = {
        "training": {"max_steps": 8, "log_every": 1, "checkpoint_every": 0},
        "eval": {"eval_every": 0, "eval_iters": 1},
    }
    params = params_for(CPU_MODELS["nanogpt_modern"][0], corpus, **sections)
    tokenize.run(params, data_root=tmp_path / "data")
    unfused = train.run(params, data_root=tmp_path / "data", out_dir=tmp_path / "unfused")
    chunked = params_for(
        CPU_MODELS["nanogpt_modern"][0], corpus, **sections, loss={"module": f"{__name__}:ChunkedEverywhereOptions"}
    )
    HEAD_KERNELS.clear()
    fused = train.run(chunked, data_root=tmp_path / "data", out_dir=tmp_path / "fused")
    # 2 micro-steps per step; then the final val pass (eval_iters 1), also from hidden states, without a backward
    assert HEAD_KERNELS == ["LinearCrossEntropyBackward"] * 8 * 2 + ["NoneType"]
    assert train_losses(tmp_path / "fused") == pytest.approx(train_losses(tmp_path / "unfused"), rel=1e-5)
    assert fused["val_loss"] == pytest.approx(unfused["val_loss"], rel=1e-5)


@pytest.mark.parametrize("name", CACHED_MODELS)
def test_kv_cache_matches_full_forward(name: str) -> None:
    model = randomize(build(name)).eval()
    idx = torch.randint(0, VOCAB, (2, 16))  # the whole context
    with torch.no_grad():
        full = model(idx)
        cache = model.new_cache()
        steps = [model(idx[:, :5], cache), model(idx[:, 5:7], cache)]  # a prompt, then 2 tokens at once
        steps += [model(idx[:, t : t + 1], cache) for t in range(7, 16)]
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)
    with pytest.raises(ValueError, match="exceeds model.context_length 16"):
        model(idx[:, :1], cache)


@pytest.mark.parametrize("name", CACHED_MODELS)
def test_cached_generation_equals_full_forward_generation(name: str) -> None:
    model = randomize(build(name)).eval()
    prompt = [3, 1, 4, 1]
    greedy = GenerateParams(num_samples=2, max_new_tokens=20, temperature=0.0)  # 24 tokens: the window slides
    cached = sample(model, prompt, greedy, VOCAB, torch.device("cpu"))
    idx = torch.tensor([prompt] * 2)
    with torch.no_grad():
        for _ in range(20):
            logits = model(idx[:, -model.context_length :])[:, -1, :VOCAB]  # (B, V), no cache
            idx = torch.cat([idx, logits.argmax(dim=-1, keepdim=True)], dim=1)
    assert cached == idx[:, len(prompt) :].tolist()


def test_nanogpt_modern_recipe() -> None:
    model = build("nanogpt_modern")
    assert not any(name.endswith("bias") for name, _ in model.named_parameters())
    assert not any("wpe" in name for name, _ in model.named_parameters())  # rotary, not learned positions
    assert model.lm_head.weight is not model.transformer.wte.weight  # untied head
    zero = [name for name, p in model.named_parameters() if not p.any()]
    assert zero == [
        "transformer.h.0.attn.c_proj.weight",
        "transformer.h.0.mlp.c_proj.weight",
        "transformer.h.1.attn.c_proj.weight",
        "transformer.h.1.mlp.c_proj.weight",
        "lm_head.weight",
    ]
    logits = randomize(model)(torch.randint(0, VOCAB, (2, 8)))
    assert logits.abs().max() <= 15.0  # the default soft cap
    assert build("nanogpt_modern", logit_softcap=None).opts.logit_softcap is None


def test_nanogpt_modern_hand_written_gradients_are_autograd_s() -> None:
    x = torch.randn(2, 3, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(rms_norm, (x,))
    assert torch.autograd.gradcheck(relu_squared, (x,))
    y = torch.randn(4, 16, 32)
    torch.testing.assert_close(rms_norm(y), F.rms_norm(y, (32,)))
    torch.testing.assert_close(relu_squared(y), F.relu(y).square())


def test_short_conv_is_a_causal_depthwise_convolution() -> None:
    torch.manual_seed(0)
    conv = ShortConv(8, 3)
    x = torch.randn(2, 6, 8)
    assert torch.equal(conv(x), x)  # zero-initialised: the identity
    with torch.no_grad():
        conv.weight.normal_()
    depthwise = conv.weight.permute(2, 1, 0)  # (kernel, 1, width) -> nn.Conv1d's (width, 1, kernel)
    y = x + F.conv1d(F.pad(x.transpose(1, 2), (2, 0)), depthwise, groups=8).transpose(1, 2)
    torch.testing.assert_close(conv(x), y)
    changed = x.clone()
    changed[:, 3] += 1.0
    moved = (conv(changed) - conv(x)).abs().amax(dim=(0, 2))  # per position
    assert moved[:3].eq(0).all() and moved[3:6].gt(0).all()  # position 3 reaches positions 3, 4 and 5 only


def test_short_conv_sits_before_every_attention_and_mlp() -> None:
    model = build("nanogpt_modern_short_conv")
    convs = {name: p.shape for name, p in model.named_parameters() if "conv" in name}
    assert convs == {f"transformer.h.{i}.{kind}_conv.weight": (3, 1, 32) for i in range(2) for kind in ("attn", "mlp")}
    assert not any(p.any() for p in model.parameters() if p.dim() == 3)
    assert {id(p) for p in model.parameters() if p.dim() == 3} <= {id(p) for p in split_params(model)["adamw_decay"]}
    assert not any("conv" in name for name, _ in build("nanogpt_modern").named_parameters())  # off by default


def test_nanogpt_modern_attention_is_the_textbook_one() -> None:
    # q, k, v are the three C-wide slices of c_attn, split into heads; QK-norm, then RoPE, then causal SDPA
    model = randomize(build("nanogpt_modern"))
    attn, (B, T, C, nh) = model.transformer.h[0].attn, (2, 8, 32, 2)
    x = torch.randn(B, T, C, generator=torch.Generator().manual_seed(3))
    cos, sin = model.rotary(0, T)
    q, k, v = (t.view(B, T, nh, C // nh).transpose(1, 2) for t in attn.c_attn(x).split(C, dim=2))
    q, k = (apply_rotary(F.rms_norm(t, (C // nh,)), cos, sin) for t in (q, k))
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
    torch.testing.assert_close(attn(x, cos, sin), attn.c_proj(y))


def test_nanogpt_modern_dropout_only_in_training() -> None:
    model = randomize(build("nanogpt_modern", dropout=0.5))
    idx = torch.randint(0, VOCAB, (2, 8), generator=torch.Generator().manual_seed(0))
    assert not torch.equal(model.train()(idx), model(idx))
    torch.testing.assert_close(model.eval()(idx), model(idx))
    assert not any(isinstance(m, torch.nn.Dropout) for m in build("nanogpt_modern").modules())  # 0: no modules


def test_nanogpt_modern_attention_scale() -> None:
    # QK-norm makes every q.k at most head size: the default scale 1/sqrt(hs) caps attention logits at
    # sqrt(hs); attn_scale sets the multiplier, and 1/sqrt(hs) given explicitly is the default
    idx = torch.randint(0, VOCAB, (2, 8), generator=torch.Generator().manual_seed(0))
    default = randomize(build("nanogpt_modern"))(idx)
    explicit = randomize(build("nanogpt_modern", attn_scale=(32 / 2) ** -0.5))(idx)
    sharper = randomize(build("nanogpt_modern", attn_scale=1.0))(idx)
    torch.testing.assert_close(default, explicit)
    assert not torch.allclose(default, sharper)


def test_tiny_transformer_options() -> None:
    defaults = TinyTransformerOptions(module="tiny_transformer", context_length=8)
    assert (defaults.n_layer, defaults.n_embd, defaults.n_head, defaults.dropout) == (2, 128, 4, 0.0)
    bare = build("tiny_transformer", norm="none", bias=False)
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in bare.modules())
    assert not any(name.endswith("bias") for name, _ in bare.named_parameters())
    assert bare(torch.randint(0, VOCAB, (2, 16))).shape == (2, 16, VOCAB)


def test_tinyllama_gqa_must_divide_heads() -> None:
    with pytest.raises(ParamsError) as exc:
        params_for({**CPU_MODELS["tinyllama"][0], "n_kv_head": 3})
    [problem] = exc.value.problems
    assert problem.startswith("test params: model.n_kv_head: "), problem
    assert "must divide n_head (4)" in problem and "use one of 1, 2, 4" in problem and "got 3" in problem


def test_rotary_models_need_an_even_head_size() -> None:
    for name in CACHED_MODELS:
        with pytest.raises(ParamsError, match=r"model.n_embd: .*even head size"):
            params_for({**CPU_MODELS[name][0], "n_head": 2, "n_embd": 30})  # head size 15


EXPECTED_HF_NAMES = [
    "model.embed_tokens.weight",
    *(
        f"model.layers.{i}.{name}.weight"
        for i in range(2)
        for name in (
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.o_proj",
            "mlp.gate_proj",
            "mlp.up_proj",
            "mlp.down_proj",
            "input_layernorm",
            "post_attention_layernorm",
        )
    ),
    "model.norm.weight",
    "lm_head.weight",
]


@pytest.mark.parametrize("tied", [False, True])
def test_tinyllama_is_hf_llama(tied: bool) -> None:
    transformers = pytest.importorskip("transformers")
    model = randomize(build("tinyllama", tie_word_embeddings=tied, rope_theta=500.0)).eval()
    state = model.state_dict()
    assert sorted(state) == sorted(EXPECTED_HF_NAMES)
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == tied
    config = transformers.LlamaConfig(**model.hf_config(), attn_implementation="eager")
    hf = transformers.LlamaForCausalLM(config).eval()
    hf.load_state_dict(state, strict=True)  # every name and shape matches
    idx = torch.randint(0, VOCAB, (2, 16))
    with torch.no_grad():
        ours, theirs = model(idx), hf(idx).logits
    assert theirs.shape == ours.shape == (2, 16, 128)  # HF vocab_size is our padded vocabulary
    assert torch.allclose(ours, theirs, atol=1e-5), (ours - theirs).abs().max()


@pytest.mark.skipif(TE_READY, reason="TransformerEngine and a CUDA GPU are present: te_llama3 builds")
def test_te_llama3_refuses_clearly_here() -> None:
    params = params_for({**CPU_MODELS["tinyllama"][0], "module": "te_llama3"})
    assert type(params.model) is TELlama3Options and params.model.rope_theta == 500000.0
    with pytest.raises(UserError) as exc:
        params.model.build(VOCAB)
    te_installed = importlib.util.find_spec("transformer_engine") is not None
    assert str(exc.value) == unavailable_reason(te_installed, torch.cuda.is_available())


def test_te_llama3_messages_name_the_fix() -> None:
    missing = unavailable_reason(te_installed=False, cuda_available=True)
    assert missing is not None and TE_INSTALL in missing and "NVIDIA GPU" in missing and "tinyllama" in missing
    no_gpu = unavailable_reason(te_installed=True, cuda_available=False)
    assert no_gpu is not None and "no CUDA GPU" in no_gpu and "tinyllama" in no_gpu
    assert unavailable_reason(te_installed=True, cuda_available=True) is None


@pytest.mark.skipif(not TE_READY, reason="needs transformer_engine and a CUDA GPU")
def test_te_llama3_trains_on_gpu() -> None:
    section = {
        "module": "te_llama3",
        "n_layer": 2,
        "n_head": 4,
        "n_kv_head": 2,
        "n_embd": 64,
        "intermediate_size": 128,
        "context_length": 32,
    }
    torch.manual_seed(0)
    model = params_for(section).model.build(VOCAB).cuda()
    idx = torch.randint(0, VOCAB, (4, 33), device="cuda")
    x, y = idx[:, :-1], idx[:, 1:]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(x)
        assert logits.shape == (4, 32, 128)
        loss = F.cross_entropy(logits.float().view(-1, 128), y.reshape(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 1.0, losses
