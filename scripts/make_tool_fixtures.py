"""Export tests/fixtures/tools/: what users' tools write, from tiny random-initialised models
saved locally (no hub download), and tools.json describing how to feed each file.

    python scripts/make_tool_fixtures.py [--out tests/fixtures/tools] [--genai-python PY]

Tools (``pip install '.[fixtures]'``):
- optimum (``optimum-cli export onnx``): merged seq2seq decoders (T5, BART, Whisper), every
  decoder attention inside the two branches of an If on ``use_cache_branch``;
- onnxruntime's transformers optimizer (``optimize_model``, fp32 and its fp16 conversion) and
  ``optimum-cli onnxruntime optimize -O2``: fused com.microsoft Attention on BERT;
- onnxruntime-genai's model builder (cpu, fp32: GroupQueryAttention; fp16: MultiHeadAttention).
  Its 0.18 release imports transformers 5 while optimum-onnx 0.1 pins transformers 4.57, so it
  runs in a second interpreter, ``--genai-python`` (a venv with torch==2.13.0,
  onnxruntime-genai and transformers>=5); without one the genai fixtures are skipped;
- diffusers exported with torch's TorchScript exporter (``dynamo=False``): attention with the
  scale computed at run time from Shape;
- transformers' Gemma 2 (eager attention, ``attn_logit_softcapping``) through torch's dynamo
  exporter at opset 18 (its TorchScript export fails in transformers 4.57's mask code): the
  softcap ``tanh(s / cap)·cap`` between the scaled scores and the mask, as primitive ops.

``--only PREFIX`` (repeatable) remakes only the fixtures whose key starts with PREFIX and keeps
the other entries of tools.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

SEED = 0
VOCAB = 99
ROOT = Path(__file__).resolve().parents[1]

# The tiny tokenizer genai's builder insists on (a word-level vocabulary, no download).
_TOKENIZER = """
import sys
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast
vocab = {f"t{i}": i for i in range(99)}
vocab.update({"<unk>": 0, "<s>": 1, "</s>": 2})
tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
tok.pre_tokenizer = pre_tokenizers.Whitespace()
fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                               eos_token="</s>")
fast.save_pretrained(sys.argv[1])
"""

_LLAMA = """
import sys, torch, transformers as tr
torch.manual_seed(0)
cfg = tr.LlamaConfig(vocab_size=99, hidden_size=64, intermediate_size=64, num_hidden_layers=1,
                     num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                     max_position_embeddings=64)
tr.LlamaForCausalLM(cfg).eval().save_pretrained(sys.argv[1])
"""


def _run(cmd: list[str], **kw) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    subprocess.run(cmd, check=True, env=env, capture_output=True, **kw)


def _seq2seq(tmp: Path) -> dict[str, Path]:
    import torch
    import transformers as tr

    torch.manual_seed(SEED)
    small = dict(vocab_size=VOCAB, d_model=16, encoder_layers=1, decoder_layers=1)
    heads = dict(encoder_attention_heads=4, decoder_attention_heads=4)
    ffn = dict(encoder_ffn_dim=32, decoder_ffn_dim=32)
    models = {
        "t5": tr.T5ForConditionalGeneration(
            tr.T5Config(
                vocab_size=VOCAB,
                d_model=16,
                d_kv=4,
                d_ff=32,
                num_layers=1,
                num_decoder_layers=1,
                num_heads=4,
                relative_attention_num_buckets=8,
                decoder_start_token_id=0,
                pad_token_id=0,
            )
        ),
        "bart": tr.BartForConditionalGeneration(
            tr.BartConfig(**small, **heads, **ffn, max_position_embeddings=64)
        ),
        "whisper": tr.WhisperForConditionalGeneration(
            tr.WhisperConfig(
                **small,
                **heads,
                **ffn,
                num_mel_bins=8,
                max_source_positions=1500,  # optimum feeds 3000 mel frames
                max_target_positions=32,
                decoder_start_token_id=1,
                pad_token_id=0,
                eos_token_id=2,
                bos_token_id=1,
            )
        ),
    }
    out = {}
    for name, model in models.items():
        src, dst = tmp / name, tmp / f"{name}_onnx"
        model.eval().save_pretrained(src)
        task = "automatic-speech-recognition" if name == "whisper" else "text2text-generation"
        _run(["optimum-cli", "export", "onnx", "-m", str(src), "--task", f"{task}-with-past",
              str(dst)])  # fmt: skip
        out[f"optimum_{name}_decoder_merged"] = dst / "decoder_model_merged.onnx"
    return out


def _bert(tmp: Path) -> dict[str, Path]:
    import torch
    import transformers as tr
    from onnxruntime.transformers.optimizer import optimize_model

    torch.manual_seed(SEED)
    cfg = tr.BertConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    tr.BertModel(cfg).eval().save_pretrained(tmp / "bert")
    _run(["optimum-cli", "export", "onnx", "-m", str(tmp / "bert"), "--task",
          "feature-extraction", str(tmp / "bert_onnx")])  # fmt: skip
    plain = tmp / "bert_onnx" / "model.onnx"
    out = {}
    opt = optimize_model(str(plain), model_type="bert", num_heads=4, hidden_size=16, opt_level=0)
    out["ortopt_bert_fp32"] = tmp / "ortopt_bert_fp32.onnx"
    opt.save_model_to_file(str(out["ortopt_bert_fp32"]))  # (adds the com.microsoft opset)
    opt.convert_float_to_float16(keep_io_types=False)
    out["ortopt_bert_fp16"] = tmp / "ortopt_bert_fp16.onnx"
    opt.save_model_to_file(str(out["ortopt_bert_fp16"]))
    _run(["optimum-cli", "onnxruntime", "optimize", "-O2", "--onnx_model",
          str(tmp / "bert_onnx"), "-o", str(tmp / "bert_o2")])  # fmt: skip
    out["optimum_O2_bert"] = tmp / "bert_o2" / "model_optimized.onnx"
    return out


def _genai(tmp: Path, python: str) -> dict[str, Path]:
    src = tmp / "llama"
    _run([python, "-c", _LLAMA, str(src)])
    _run([python, "-c", _TOKENIZER, str(src)])
    out = {}
    for precision in ("fp32", "fp16"):
        dst = tmp / f"genai_{precision}"
        _run([python, "-m", "onnxruntime_genai.models.builder", "-i", str(src), "-o", str(dst),
              "-p", precision, "-e", "cpu", "-c", str(tmp / "cache")])  # fmt: skip
        out[f"genai_llama_cpu_{precision}"] = dst / "model.onnx"
    return out


def _diffusers(tmp: Path) -> dict[str, Path]:
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(SEED)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",),
        up_block_types=("UpDecoderBlock2D",),
        block_out_channels=(8,),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
    ).eval()
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        cross_attention_dim=16,
        attention_head_dim=4,
        norm_num_groups=4,
    ).eval()

    class Decode(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.vae = vae

        def forward(self, z):
            return self.vae.decode(z).sample

    class Denoise(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.unet = unet

        def forward(self, x, t, e):
            return self.unet(x, t, e).sample

    out = {"diffusers_vae_decoder_ts17": tmp / "vae.onnx", "diffusers_unet_ts17": tmp / "unet.onnx"}
    with torch.no_grad():
        torch.onnx.export(
            Decode(),
            (torch.randn(1, 4, 8, 8),),
            out["diffusers_vae_decoder_ts17"],
            dynamo=False,
            opset_version=17,
            input_names=["latent"],
            output_names=["sample"],
            dynamic_axes={"latent": {0: "batch", 2: "height", 3: "width"}},
        )
        torch.onnx.export(
            Denoise(),
            (torch.randn(1, 4, 8, 8), torch.tensor([3]), torch.randn(1, 5, 16)),
            out["diffusers_unet_ts17"],
            dynamo=False,
            opset_version=17,
            input_names=["sample", "timestep", "encoder_hidden_states"],
            output_names=["out"],
            dynamic_axes={
                "sample": {0: "batch"},
                "encoder_hidden_states": {0: "batch", 1: "tokens"},
            },
        )
    return out


def _gemma2(tmp: Path) -> dict[str, Path]:
    import torch
    import transformers as tr

    torch.manual_seed(SEED)
    cfg = tr.Gemma2Config(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=64,
        num_hidden_layers=2,  # one sliding-window layer, one global
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=64,
        sliding_window=4,
        attn_logit_softcapping=50.0,
        final_logit_softcapping=30.0,
        query_pre_attn_scalar=16,
        attn_implementation="eager",
    )
    model = tr.Gemma2ForCausalLM(cfg).eval()

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, ids, mask):
            return self.model(input_ids=ids, attention_mask=mask, use_cache=False).logits

    out = {"transformers_gemma2_dynamo18": tmp / "gemma2.onnx"}
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    dims = {0: batch, 1: sequence}
    with torch.no_grad():
        torch.onnx.export(
            Logits(),
            (torch.randint(0, VOCAB, (2, 7)), torch.ones(2, 7, dtype=torch.int64)),
            out["transformers_gemma2_dynamo18"],
            dynamo=True,
            opset_version=18,
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_shapes={"ids": dims, "mask": dims},
        )
    return out


def _seq2seq_runs(past_dim: str, extra: dict) -> list[dict]:
    """The merged decoder's two branches: no cache (prompt) and one decode step with a past."""
    prompt = {"batch_size": 2, "decoder_sequence_length": 3, past_dim: 1, **extra}
    step = {"batch_size": 2, "decoder_sequence_length": 1, past_dim: 4, **extra}
    return [
        {"dims": prompt, "values": {"use_cache_branch": [False]}},
        {"dims": step, "values": {"use_cache_branch": [True]}},
    ]


BERT_RUNS = [{"dims": {"batch_size": 2, "sequence_length": 7}, "pad": True}]
GENAI_DIMS = {"batch_size": 2, "kv_cache_dim": 16}
# what each fixture is fed: dims by name, and explicit values; "pad" pads the last mask row
RUNS: dict[str, list[dict]] = {
    "optimum_t5_decoder_merged": _seq2seq_runs(
        "past_decoder_sequence_length", {"encoder_sequence_length": 5}
    ),
    "optimum_bart_decoder_merged": _seq2seq_runs(
        "past_decoder_sequence_length", {"encoder_sequence_length": 5}
    ),
    "optimum_whisper_decoder_merged": _seq2seq_runs(
        "past_decoder_sequence_length", {"encoder_sequence_length": 5}
    ),
    "ortopt_bert_fp32": BERT_RUNS,
    "ortopt_bert_fp16": BERT_RUNS,
    "optimum_O2_bert": BERT_RUNS,
    "genai_llama_cpu_fp32": [
        {"dims": {**GENAI_DIMS, "sequence_length": 5, "past_sequence_length": 0}},
        {"dims": {**GENAI_DIMS, "sequence_length": 1, "past_sequence_length": 5}},
    ],
    "genai_llama_cpu_fp16": [
        {"dims": {**GENAI_DIMS, "sequence_length": 5, "past_sequence_length": 0}},
        {"dims": {**GENAI_DIMS, "sequence_length": 1, "past_sequence_length": 5}},
    ],
    "diffusers_vae_decoder_ts17": [{"dims": {"batch": 1, "height": 8, "width": 8}}],
    "diffusers_unet_ts17": [{"dims": {"batch": 1, "tokens": 5}}],
    "transformers_gemma2_dynamo18": [
        {"dims": {"batch": 2, "sequence": 7}},
        {"dims": {"batch": 2, "sequence": 7}, "pad": True},
    ],
}
TOOL = {
    "optimum": "optimum merged decoder",
    "ortopt": "onnxruntime transformers optimizer",
    "genai": "onnxruntime-genai model builder",
    "diffusers": "diffusers, TorchScript exporter",
    "transformers": "transformers Gemma 2 (softcap), dynamo exporter",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures" / "tools")
    parser.add_argument("--genai-python", help="interpreter with onnxruntime-genai installed")
    parser.add_argument("--only", action="append", help="remake only keys with this prefix")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import onnx

    import pasa_onnx

    args.out.mkdir(parents=True, exist_ok=True)
    manifest: dict = {}
    manifest_path = args.out / "tools.json"
    if args.only and manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())

    def wanted(key: str) -> bool:
        return not args.only or any(key.startswith(prefix) for prefix in args.only)

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        # each maker and the keys it makes
        makers = [
            (_seq2seq, [k for k in RUNS if k.startswith("optimum_") and "merged" in k]),
            (_bert, ["ortopt_bert_fp32", "ortopt_bert_fp16", "optimum_O2_bert"]),
            (_diffusers, ["diffusers_vae_decoder_ts17", "diffusers_unet_ts17"]),
            (_gemma2, ["transformers_gemma2_dynamo18"]),
        ]
        made: dict[str, Path] = {}
        for maker, keys in makers:
            if any(wanted(key) for key in keys):
                made.update(maker(tmp))
        if args.genai_python and wanted("genai"):
            made.update(_genai(tmp, args.genai_python))
        elif not args.genai_python:
            print("genai fixtures skipped: no --genai-python", file=sys.stderr)
        made = {key: path for key, path in made.items() if wanted(key)}
        for key, path in made.items():
            model = onnx.load(path)  # external data (genai) is folded into the one file
            dst = args.out / f"{key}.onnx"
            onnx.save(model, dst)
            _, summary = pasa_onnx.rewrite(model)
            half = (
                any(
                    i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
                    for i in model.graph.input
                )
                or "fp16" in key
            )
            manifest[key] = {
                "file": dst.name,
                "tool": TOOL[
                    next(t for t in TOOL if key.startswith(t) or key == "optimum_O2_bert")
                ],
                "attention": summary.found,
                "half": half,
                "runs": RUNS[key],
            }
            print(f"{key}: {summary.found} attention, {summary.replaced} replaced")
    if "optimum_O2_bert" in manifest:
        manifest["optimum_O2_bert"]["tool"] = (
            TOOL["ortopt"] + " (optimum-cli onnxruntime optimize -O2)"
        )
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    shutil.rmtree(args.out / "__pycache__", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
