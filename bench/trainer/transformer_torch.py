#!/usr/bin/python3
"""The Transformer language model of `opu-train --model transformer` in PyTorch, timed per step.

The same model as trainer/src/models/transformer.cpp and the paper's code (post-LN decoder-only
blocks, sinusoidal positions, untied embeddings, ReLU FFN, dropout), the same batch (random windows
of context + 1 characters of a text file), Adam; BP, or macro DFA through opu_toolkit.DFA (one
DFALayer per block output, the error dL/d(final hidden state) projected per token, as TinyDFA).
Prints one JSON line: tokens per second of training, seconds per step, model FLOPs per step and the
float GEMM's rate measured in the same process (torch.mm, 1024^3), so that the caller can form
ratios. Run with Debian's python3 and one thread (bench/trainer/transformer_speed.sh does).

Usage: transformer_torch.py --text FILE [--method bp|dfa] [--steps N] [--warmup N] [--layers 4]
       [--d-model 128] [--heads 4] [--d-ff 512] [--context 128] [--batch 32] [--threads 1]
"""
import argparse
import json
import math
import os
import sys
import time

# One OpenBLAS thread: torch.set_num_threads does not reach Debian's pthread OpenBLAS, whose own
# threads made small products 100x slower on a loaded 2-core machine. Set before torch loads it.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))


class Attention(nn.Module):
    """Causal multi-head self-attention, as nn.MultiheadAttention computes it, with each batched
    product's right operand laid out column-major: Debian's torch 1.13 (BLAS_INFO=generic) takes a
    slow path for a row-major right operand (0.030 s against 0.002 s for 128 products of
    128 x 32 by 32 x 128 on this machine, one thread)."""

    def __init__(self, d_model, heads, dropout):
        super().__init__()
        self.heads, self.qkv, self.out = heads, nn.Linear(d_model, 3 * d_model), nn.Linear(
            d_model, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, mask):
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = (z.reshape(b * self.heads, t, d // self.heads) for z in (q, k, v))
        scores = torch.bmm(q * (d // self.heads) ** -0.5, k.transpose(1, 2)) + mask
        weights = self.drop(torch.softmax(scores, dim=-1))
        v_columns = v.transpose(1, 2).contiguous().transpose(1, 2)
        y = torch.bmm(weights, v_columns).view(b, self.heads, t, d // self.heads)
        return self.out(y.transpose(1, 2).reshape(b, t, d)), None


class Block(nn.Module):
    """One post-LN block: x = norm1(x + attn(x)); x = norm2(x + ffn(x))."""

    def __init__(self, d_model, heads, d_ff, dropout):
        super().__init__()
        self.attn = Attention(d_model, heads, dropout)
        self.ff1, self.ff2 = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, mask):
        a, _ = self.attn(x, mask)
        x = self.norm1(x + self.drop(a))
        h = self.ff2(self.drop(F.relu(self.ff1(x))))
        return self.norm2(x + self.drop(h))


class LanguageModel(nn.Module):
    def __init__(self, vocab, args, dfa):
        super().__init__()
        d = args.d_model
        self.scale = math.sqrt(d)
        self.embed = nn.Embedding(vocab, d)
        position = torch.arange(args.context).unsqueeze(1)
        freq = torch.exp(torch.arange(0, d, 2) * (-math.log(10000.0) / d))
        pe = torch.zeros(args.context, d)
        pe[:, 0::2], pe[:, 1::2] = torch.sin(position * freq), torch.cos(position * freq)
        self.register_buffer("positions", pe)
        self.drop = nn.Dropout(args.dropout)
        self.blocks = nn.ModuleList(Block(d, args.heads, args.d_ff, args.dropout)
                                    for _ in range(args.layers))
        self.decoder = nn.Linear(d, vocab)
        mask = torch.triu(torch.full((args.context, args.context), float("-inf")), diagonal=1)
        self.register_buffer("mask", mask)
        self.dfa_points = None
        if dfa:
            from opu_toolkit import DFA, DFALayer
            self.dfa_points = nn.ModuleList(DFALayer(batch_dims=(0, 1)) for _ in self.blocks)
            self.dfa = DFA(list(self.dfa_points), batch_dims=(0, 1))

    def forward(self, tokens):
        x = self.drop(self.embed(tokens) * self.scale + self.positions[: tokens.shape[1]])
        for index, block in enumerate(self.blocks):
            x = block(x, self.mask[: tokens.shape[1], : tokens.shape[1]])
            if self.dfa_points is not None:
                x = self.dfa_points[index](x)
        if self.dfa_points is not None:
            x = self.dfa(x)  # the projected error is dL/d(final hidden state), per token
        return self.decoder(x)


def model_flops_per_token(args, vocab):
    """Forward multiply-adds x 2 per token: the projections, FFN, decoder and attention's two
    products over the context, counted dense (no causal saving); training is 3x forward."""
    d, f, c = args.d_model, args.d_ff, args.context
    per_layer = 2 * (4 * d * d + 2 * d * f) + 2 * 2 * c * d
    return 3 * (args.layers * per_layer + 2 * d * vocab)


def gemm_gflops(seconds=1.0):
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    torch.mm(a, b)
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        runs += 1
    return 2 * 1024 ** 3 * runs / (time.perf_counter() - start) / 1e9


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--text", required=True)
    p.add_argument("--method", choices=["bp", "dfa"], default="bp")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--d-ff", type=int, default=512)
    p.add_argument("--context", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    with open(args.text, encoding="utf-8", errors="replace") as f:
        text = f.read()
    vocabulary = sorted(set(text))
    index = {c: i for i, c in enumerate(vocabulary)}
    data = torch.tensor([index[c] for c in text[: int(0.9 * len(text))]], dtype=torch.long)

    model = LanguageModel(len(vocabulary), args, dfa=args.method == "dfa")
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4,
                                 betas=(0.9, 0.98 if args.method == "bp" else 0.999))
    model.train()

    def step():
        starts = torch.randint(0, len(data) - args.context - 1, (args.batch,))
        window = torch.stack([data[s: s + args.context + 1] for s in starts])
        logits = model(window[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), window[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        optimizer.step()
        return loss.item()

    for _ in range(args.warmup):
        step()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = (time.perf_counter() - start) / args.steps
    tokens = args.batch * args.context
    print(json.dumps({
        "framework": f"pytorch {torch.__version__}", "method": args.method,
        "threads": args.threads, "step_s": seconds, "tokens_per_s": tokens / seconds,
        "model_flops_per_step": model_flops_per_token(args, len(vocabulary)) * tokens,
        "gemm_gflops": gemm_gflops()}))


if __name__ == "__main__":
    main()
