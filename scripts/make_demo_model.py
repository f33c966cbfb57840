"""Regenerate the shipped demo model, examples/models/demo_fp16.onnx (bit-for-bit).

A two-layer fp16 text encoder (vocabulary 1000, hidden 256, 4 heads of 64) with random weights
from a fixed seed, whose key and query projections carry a large shared bias -- the pattern seen in
real Qwen2 and Stable Video Diffusion layers. Its attention is written the way eager Hugging Face
code writes it (MatMul -> Div(sqrt(d)) -> Add(padding mask) -> Softmax -> MatMul) and exported with
torch's TorchScript exporter at opset 17. In fp16, Q.K^T exceeds 65504 and the original model
outputs NaN; the PasaAttention rewrite stays finite.

    pip install torch==2.13.0   # CPU build
    python scripts/make_demo_model.py [--output examples/models/demo_fp16.onnx]
"""

from __future__ import annotations

import argparse
import io
import math
from pathlib import Path

import torch
from torch import nn

VOCAB, HIDDEN, HEADS, LAYERS, FFN = 1000, 256, 4, 2, 512
KEY_BIAS, QUERY_BIAS = 40.0, 30.0  # shared components: |q.k| ~ 64 * 1200 = 76800 > 65504


class SelfAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q_proj = nn.Linear(HIDDEN, HIDDEN)
        self.k_proj = nn.Linear(HIDDEN, HIDDEN)
        self.v_proj = nn.Linear(HIDDEN, HIDDEN)
        self.o_proj = nn.Linear(HIDDEN, HIDDEN)
        self.head_dim = HIDDEN // HEADS

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        return x.view(b, s, HEADS, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q, k, v = (
            self._heads(self.q_proj(x)),
            self._heads(self.k_proj(x)),
            self._heads(self.v_proj(x)),
        )
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        probs = torch.softmax(scores + mask, dim=-1)
        out = torch.matmul(probs, v).transpose(1, 2).reshape(x.shape)
        return self.o_proj(out)


class Layer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(HIDDEN), nn.LayerNorm(HIDDEN)
        self.attn = SelfAttention()
        self.ffn = nn.Sequential(nn.Linear(HIDDEN, FFN), nn.GELU(), nn.Linear(FFN, HIDDEN))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), mask)
        return x + self.ffn(self.norm2(x))


class DemoEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, HIDDEN)
        self.layers = nn.ModuleList(Layer() for _ in range(LAYERS))
        self.norm = nn.LayerNorm(HIDDEN)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids)
        # Padding mask as eager HF code builds it: 0 where attended, finfo.min where padded.
        mask = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        for layer in self.layers:
            x = layer(x, mask)
        return self.norm(x)


def build() -> DemoEncoder:
    torch.manual_seed(0)
    model = DemoEncoder()
    with torch.no_grad():
        for layer in model.layers:
            layer.attn.k_proj.bias.fill_(KEY_BIAS)
            layer.attn.q_proj.bias.fill_(QUERY_BIAS)
    return model.half().eval()


def export(path: Path) -> None:
    model = build()
    ids = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, 16, dtype=torch.int64)
    buffer = io.BytesIO()
    torch.onnx.export(
        model,
        (ids, mask),
        buffer,
        dynamo=False,
        opset_version=17,
        input_names=["input_ids", "attention_mask"],
        output_names=["last_hidden_state"],
        dynamic_axes={
            "input_ids": {0: "batch", 1: "sequence"},
            "attention_mask": {0: "batch", 1: "sequence"},
            "last_hidden_state": {0: "batch", 1: "sequence"},
        },
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="examples/models/demo_fp16.onnx", type=Path)
    args = parser.parse_args()
    export(args.output)
    print(f"wrote {args.output} ({args.output.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
