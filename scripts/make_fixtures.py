"""Export the small random-initialised models that the rewriter's tests run into tests/fixtures/.

Each case is exported with torch.onnx.export at dynamo=True opset 18 and 23 and dynamo=False
opset 17 (fixed seeds, tiny configs). Next to the .onnx files, ``manifest.json`` records the
concrete input shapes and integer ranges the tests feed. Run:

    python scripts/make_fixtures.py [--only NAME ...] [--out DIR]

Exports that torch itself cannot do (see shared survey: TorchScript has no enable_gqa, dynamo
fails on some decode steps) are skipped with a message and left out of the manifest.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import onnx.inliner
import torch
import torch.nn.functional as F
from torch import nn

VOCAB = 99
SEQ = 8
BATCH = 2
EXPORTERS = {"dynamo18": (True, 18), "dynamo23": (True, 23), "ts17": (False, 17)}
# dynamo23 exports whose ONNX Attention nodes are then expanded into their function body
# (attention written from primitive ops by others); these get the exporter name "dynamo23x".
EXPANDED = ("sdpa_floatmask", "sdpa_boolmask", "sdpa_causal", "sdpa_gqa", "bert_sdpa")


@dataclass
class Case:
    """One model: how to build it and its example inputs."""

    name: str
    build: Callable[[], tuple[nn.Module, dict[str, torch.Tensor]]]
    # input name -> {axis: dim name}; dims kept dynamic in the export
    dynamic: dict[str, dict[int, str]] = field(default_factory=dict)
    exporters: tuple[str, ...] = tuple(EXPORTERS)
    half: bool = False


def _ids(batch: int = BATCH, seq: int = SEQ) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, seq), dtype=torch.int64)


def _pad_mask(batch: int = BATCH, seq: int = SEQ) -> torch.Tensor:
    mask = torch.ones(batch, seq, dtype=torch.int64)
    mask[-1, seq - 3 :] = 0  # last sequence padded
    return mask


class _Hidden(nn.Module):
    """One input tensor in, last_hidden_state out."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x).last_hidden_state


class _TextHidden(_Hidden):
    """input_ids and attention_mask by keyword (GPT-2's second positional is the cache)."""

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def _hf(config_cls: str, model_cls: str, attn: str, half: bool = False, **cfg):
    import transformers

    config = getattr(transformers, config_cls)(**cfg)
    model = getattr(transformers, model_cls)._from_config(config, attn_implementation=attn)
    model.eval()
    return model.half() if half else model


def _text(config_cls: str, model_cls: str, attn: str, half: bool = False, **cfg):
    def build():
        model = _hf(config_cls, model_cls, attn, half, **cfg)
        return _TextHidden(model), {"input_ids": _ids(), "attention_mask": _pad_mask()}

    return build


TEXT_DYN = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}}

BERT = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    num_hidden_layers=1,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=64,
)
GPT2 = dict(vocab_size=VOCAB, n_embd=32, n_layer=1, n_head=4, n_positions=64)
LLAMA = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=1,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
)
CLIP = dict(BERT)  # CLIPTextConfig takes the same size arguments
BART = dict(
    vocab_size=VOCAB,
    d_model=32,
    encoder_layers=1,
    decoder_layers=1,
    encoder_attention_heads=4,
    decoder_attention_heads=4,
    encoder_ffn_dim=37,
    decoder_ffn_dim=37,
    max_position_embeddings=64,
)
T5 = dict(
    vocab_size=VOCAB,
    d_model=32,
    d_kv=8,
    d_ff=37,
    num_layers=1,
    num_decoder_layers=1,
    num_heads=4,
    relative_attention_num_buckets=8,
    relative_attention_max_distance=16,
)


def _seq2seq(config_cls: str, model_cls: str, cfg: dict):
    def make(attn: str):
        def build():
            model = _hf(config_cls, model_cls, attn, **cfg)

            class Seq2Seq(nn.Module):
                def __init__(self) -> None:
                    super().__init__()
                    self.model = model

                def forward(self, input_ids, attention_mask, decoder_input_ids):
                    return self.model(
                        input_ids=input_ids,
                        attention_mask=attention_mask,
                        decoder_input_ids=decoder_input_ids,
                        use_cache=False,
                    ).last_hidden_state

            feeds = {
                "input_ids": _ids(),
                "attention_mask": _pad_mask(),
                "decoder_input_ids": _ids(BATCH, SEQ - 2),
            }
            return Seq2Seq(), feeds

        return build

    return make


def _vit(attn: str):
    def build():
        model = _hf(
            "ViTConfig",
            "ViTModel",
            attn,
            image_size=32,
            patch_size=8,
            num_channels=3,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=4,
            intermediate_size=37,
        )
        return _Hidden(model), {"pixel_values": torch.randn(BATCH, 3, 32, 32)}

    return build


def _whisper(attn: str):
    def build():
        model = _hf(
            "WhisperConfig",
            "WhisperModel",
            attn,
            d_model=32,
            encoder_layers=1,
            decoder_layers=1,
            encoder_attention_heads=4,
            decoder_attention_heads=4,
            encoder_ffn_dim=37,
            decoder_ffn_dim=37,
            num_mel_bins=16,
            max_source_positions=16,
            vocab_size=VOCAB,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            decoder_start_token_id=1,
        ).get_encoder()
        return _Hidden(model), {"input_features": torch.randn(BATCH, 16, 32)}

    return build


class SDPA(nn.Module):
    """F.scaled_dot_product_attention on projected inputs, in one of its call forms."""

    def __init__(self, mode: str, heads: int = 4, kv_heads: int = 4, dim: int = 32) -> None:
        super().__init__()
        self.mode, self.heads, self.kv_heads = mode, heads, kv_heads
        self.d = dim // heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * kv_heads * self.d)

    def forward(self, x, mask=None):
        b, s, _ = x.shape
        q = self.q(x).view(b, s, self.heads, self.d).transpose(1, 2)
        k, v = self.kv(x).view(b, s, 2, self.kv_heads, self.d).permute(2, 0, 3, 1, 4).unbind(0)
        kwargs = {}
        if self.mode == "causal":
            kwargs["is_causal"] = True
        elif self.mode == "scale":
            kwargs["scale"] = 0.05
        elif self.mode in ("boolmask", "floatmask"):
            kwargs["attn_mask"] = mask
        if self.kv_heads != self.heads:
            kwargs["enable_gqa"] = True
        y = F.scaled_dot_product_attention(q, k, v, **kwargs)
        return y.transpose(1, 2).reshape(b, s, -1)


def _sdpa(mode: str, kv_heads: int = 4, half: bool = False):
    def build():
        model = SDPA(mode, kv_heads=kv_heads).eval()
        x = torch.randn(BATCH, SEQ, 32)
        feeds: dict[str, torch.Tensor] = {"x": x}
        if mode == "boolmask":
            feeds["mask"] = torch.rand(BATCH, 1, SEQ, SEQ) > 0.3
            feeds["mask"][..., 0] = True
        elif mode == "floatmask":
            feeds["mask"] = torch.randn(BATCH, 1, SEQ, SEQ)
        if half:
            model = model.half()
            feeds = {k: v.half() if v.is_floating_point() else v for k, v in feeds.items()}
        return model, feeds

    return build


class MHA(nn.Module):
    """nn.MultiheadAttention (batch_first) in self, causal or cross form."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode
        kdim = 24 if mode == "cross" else None
        self.attn = nn.MultiheadAttention(32, 4, batch_first=True, kdim=kdim, vdim=kdim)

    def forward(self, x, memory=None):
        if self.mode == "cross":
            y, _ = self.attn(x, memory, memory, need_weights=False)
            return y
        mask = None
        if self.mode == "causal":
            s = x.shape[1]
            mask = torch.triu(torch.full((s, s), float("-inf")), diagonal=1)
        y, w = self.attn(x, x, x, attn_mask=mask, need_weights=self.mode == "weights")
        return (y, w) if self.mode == "weights" else y


def _mha(mode: str):
    def build():
        feeds = {"x": torch.randn(BATCH, SEQ, 32)}
        if mode == "cross":
            feeds["memory"] = torch.randn(BATCH, SEQ + 3, 24)
        return MHA(mode).eval(), feeds

    return build


class KVStep(nn.Module):
    """A decoder step with a KV cache: past K/V concatenated with the new ones, attention over
    all keys with an additive padding/causal mask, present K/V returned."""

    def __init__(self, sdpa: bool, heads: int = 4, kv_heads: int = 2, dim: int = 32) -> None:
        super().__init__()
        self.sdpa, self.heads, self.kv_heads = sdpa, heads, kv_heads
        self.d = dim // heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, kv_heads * self.d)
        self.v = nn.Linear(dim, kv_heads * self.d)
        self.o = nn.Linear(dim, dim)

    def forward(self, x, past_key, past_value, attention_mask):
        b, s, _ = x.shape
        q = self.q(x).view(b, s, self.heads, self.d).transpose(1, 2)
        k = self.k(x).view(b, s, self.kv_heads, self.d).transpose(1, 2)
        v = self.v(x).view(b, s, self.kv_heads, self.d).transpose(1, 2)
        k = torch.cat([past_key, k], dim=-2)
        v = torch.cat([past_value, v], dim=-2)
        total = k.shape[2]
        # additive mask [B,1,S,P+S]: padding from attention_mask and causal over the new tokens
        pad = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        pos = torch.arange(total - s, total)[:, None]
        causal = (torch.arange(total)[None, :] > pos).to(x.dtype) * torch.finfo(x.dtype).min
        mask = pad + causal
        # repeat_kv as HF writes it
        rep = self.heads // self.kv_heads
        kr = k[:, :, None].expand(b, self.kv_heads, rep, total, self.d)
        kr = kr.reshape(b, self.heads, total, self.d)
        vr = v[:, :, None].expand(b, self.kv_heads, rep, total, self.d)
        vr = vr.reshape(b, self.heads, total, self.d)
        if self.sdpa:
            y = F.scaled_dot_product_attention(q, kr, vr, attn_mask=mask)
        else:
            w = torch.matmul(q, kr.transpose(2, 3)) * self.d**-0.5 + mask
            y = torch.matmul(torch.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype), vr)
        y = self.o(y.transpose(1, 2).reshape(b, s, -1))
        return y, k, v


def _kv(sdpa: bool):
    def build():
        past = 5
        feeds = {
            "x": torch.randn(BATCH, 1, 32),
            "past_key": torch.randn(BATCH, 2, past, 8),
            "past_value": torch.randn(BATCH, 2, past, 8),
            "attention_mask": _pad_mask(BATCH, past + 1),
        }
        feeds["attention_mask"][-1] = 1
        feeds["attention_mask"][-1, :2] = 0  # left padding
        return KVStep(sdpa).eval(), feeds

    return build


class _HFDecodeStep(nn.Module):
    """One decode step of an HF decoder with a one-layer KV cache passed as tensors: past K/V
    in, present K/V out (the cache's Concat feeds both attention and the outputs)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, past_key, past_value):
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        cache.update(past_key, past_value, 0)
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            past_key_values=cache,
            use_cache=True,
        )
        layer = out.past_key_values.layers[0]
        return out.last_hidden_state, layer.keys, layer.values


def _hf_decode(config_cls: str, model_cls: str, attn: str, kv_heads: int, **cfg):
    def build():
        model = _hf(config_cls, model_cls, attn, **cfg)
        past = 5
        mask = torch.ones(BATCH, past + 1, dtype=torch.int64)
        mask[-1, :2] = 0  # left padding
        feeds = {
            "input_ids": _ids(BATCH, 1),
            "attention_mask": mask,
            "past_key": torch.randn(BATCH, kv_heads, past, 8),
            "past_value": torch.randn(BATCH, kv_heads, past, 8),
        }
        return _HFDecodeStep(model).eval(), feeds

    return build


def _diffusers(processor: str):
    def build():
        from diffusers.models.attention import BasicTransformerBlock
        from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

        block = BasicTransformerBlock(
            dim=32, num_attention_heads=4, attention_head_dim=8, cross_attention_dim=24
        ).eval()
        for attn in (block.attn1, block.attn2):
            attn.set_processor(AttnProcessor() if processor == "eager" else AttnProcessor2_0())

        class Block(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.block = block

            def forward(self, hidden_states, encoder_hidden_states):
                return self.block(hidden_states, encoder_hidden_states=encoder_hidden_states)

        feeds = {
            "hidden_states": torch.randn(BATCH, 16, 32),
            "encoder_hidden_states": torch.randn(BATCH, 7, 24),
        }
        return Block(), feeds

    return build


def cases() -> list[Case]:
    out: list[Case] = []
    for attn in ("eager", "sdpa"):
        out += [
            Case(f"bert_{attn}", _text("BertConfig", "BertModel", attn, **BERT), TEXT_DYN),
            Case(f"gpt2_{attn}", _text("GPT2Config", "GPT2Model", attn, **GPT2), TEXT_DYN),
            Case(f"llama_{attn}", _text("LlamaConfig", "LlamaModel", attn, **LLAMA), TEXT_DYN),
            Case(f"qwen2_{attn}", _text("Qwen2Config", "Qwen2Model", attn, **LLAMA), TEXT_DYN),
            Case(f"clip_text_{attn}", _text("CLIPTextConfig", "CLIPTextModel", attn, **CLIP)),
            Case(f"t5_{attn}", _seq2seq("T5Config", "T5Model", T5)(attn)),
            Case(f"bart_{attn}", _seq2seq("BartConfig", "BartModel", BART)(attn)),
            Case(f"vit_{attn}", _vit(attn)),
            Case(f"whisper_enc_{attn}", _whisper(attn)),
            Case(f"kv_step_{attn}", _kv(attn == "sdpa")),
            Case(f"gpt2_kv_{attn}", _hf_decode("GPT2Config", "GPT2Model", attn, 4, **GPT2)),
            Case(f"llama_kv_{attn}", _hf_decode("LlamaConfig", "LlamaModel", attn, 2, **LLAMA)),
            Case(f"diffusers_block_{attn}", _diffusers(attn)),
        ]
    half_llama = _text("LlamaConfig", "LlamaModel", "eager", True, **LLAMA)
    half_bert = _text("BertConfig", "BertModel", "sdpa", True, **BERT)
    out += [
        Case("bert_sdpa_fp16", half_bert, TEXT_DYN, half=True),
        Case("llama_eager_fp16", half_llama, TEXT_DYN, half=True),
        Case("sdpa_boolmask_fp16", _sdpa("boolmask", half=True), half=True),
        Case("sdpa_plain", _sdpa("plain"), {"x": {0: "batch", 1: "seq"}}),
        Case("sdpa_causal", _sdpa("causal")),
        Case("sdpa_boolmask", _sdpa("boolmask")),
        Case("sdpa_floatmask", _sdpa("floatmask")),
        Case("sdpa_scale", _sdpa("scale")),
        Case("sdpa_gqa", _sdpa("causal", kv_heads=2), exporters=("dynamo18", "dynamo23")),
        Case("mha_self", _mha("self")),
        Case("mha_causal", _mha("causal")),
        Case("mha_cross", _mha("cross")),
        Case("mha_weights", _mha("weights")),
    ]
    return out


def expand_attention(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace every ONNX Attention node by its (context-dependent) function body."""
    model = onnx.shape_inference.infer_shapes(model)
    graph = model.graph
    types = {v.name: v.type for v in [*graph.input, *graph.value_info, *graph.output]}
    schema = onnx.defs.get_schema("Attention", 23)
    for i, node in enumerate(graph.node):
        if node.op_type != "Attention" or node.domain not in ("", "ai.onnx"):
            continue
        arg_types = [(types[n] if n else onnx.TypeProto()).SerializeToString() for n in node.input]
        body = onnx.FunctionProto()
        body.ParseFromString(
            schema.get_context_dependent_function(node.SerializeToString(), arg_types)
        )
        body.name, body.domain = f"attention_body_{i}", "fixtures.expand"
        body.opset_import.append(onnx.helper.make_opsetid("", 23))
        node.op_type, node.domain = body.name, body.domain
        del node.attribute[:]
        model.functions.append(body)
    model.opset_import.append(onnx.helper.make_opsetid("fixtures.expand", 1))
    model = onnx.inliner.inline_local_functions(model)
    for i, node in enumerate(model.graph.node):  # inlined nodes come unnamed
        node.name = node.name or f"expanded_{i}"
    return model


def export(case: Case, exporter: str, out_dir: Path) -> dict | None:
    expand = exporter.endswith("x")
    dynamo, opset = EXPORTERS[exporter.removesuffix("x")]
    torch.manual_seed(0)
    model, feeds = case.build()
    path = out_dir / f"{case.name}_{exporter}.onnx"
    dynamic = {k: v for k, v in case.dynamic.items() if k in feeds}
    kwargs: dict = dict(input_names=list(feeds), opset_version=opset, dynamo=dynamo)
    if dynamo:
        kwargs["external_data"] = False
        if dynamic:
            auto = torch.export.Dim.AUTO
            kwargs["dynamic_shapes"] = {
                k: {axis: auto for axis in dynamic.get(k, {})} for k in feeds
            }
    elif dynamic:
        kwargs["dynamic_axes"] = dynamic
    # MultiheadAttention's fast path (no_grad + eval) is not exportable by TorchScript
    grad = torch.enable_grad() if case.name.startswith("mha") else torch.no_grad()
    log = io.StringIO()
    try:
        with grad, warnings.catch_warnings(), contextlib.redirect_stdout(log):
            warnings.simplefilter("ignore")
            torch.onnx.export(model, tuple(feeds.values()), str(path), **kwargs)
    except Exception as exc:  # an exporter limitation, not ours: report and go on
        print(f"  skip {path.name}: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
        path.unlink(missing_ok=True)
        return None
    if expand:
        model = expand_attention(onnx.load(path))
        model.opset_import.pop()  # the function domain is gone with the inlining
        onnx.save(model, path)
    try:  # a model onnxruntime cannot run is no fixture (e.g. RotaryEmbedding-23, see survey)
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        session.run(None, {k: v.numpy() for k, v in feeds.items()})
    except Exception as exc:
        print(f"  skip {path.name}: onnxruntime cannot run it: {str(exc).splitlines()[0][:160]}")
        path.unlink(missing_ok=True)
        return None
    inputs = {}
    for name, t in feeds.items():
        spec: dict = {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
        if name.endswith("input_ids"):
            spec["high"] = VOCAB
        elif name == "attention_mask" or t.dtype == torch.bool:
            spec["values"] = t.tolist()
        inputs[name] = spec
    return {"file": path.name, "case": case.name, "exporter": exporter, "inputs": inputs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "tests/fixtures")
    parser.add_argument("--only", nargs="*", help="case names to export (default: all)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    manifest_path = args.out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    for case in cases():
        if args.only and case.name not in args.only:
            continue
        for exporter in case.exporters + (("dynamo23x",) if case.name in EXPANDED else ()):
            t0 = time.perf_counter()
            entry = export(case, exporter, args.out)
            key = f"{case.name}_{exporter}"
            if entry is None:
                manifest.pop(key, None)
                continue
            entry["half"] = case.half
            manifest[key] = entry
            size = (args.out / entry["file"]).stat().st_size // 1024
            print(f"  {entry['file']}: {size} KiB, {time.perf_counter() - t0:.1f} s", flush=True)
    manifest_path.write_text(json.dumps(dict(sorted(manifest.items())), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
