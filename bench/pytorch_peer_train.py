#!/usr/bin/env python3
"""An independent PyTorch (eager) training loop of the same model as nats/transformer.cpp, for throughput ratios.

Same architecture (pre-norm LayerNorm, RoPE halves convention, GELU MLP, no biases in Linear layers, tied
embeddings), same global batch / micro batch / context, AdamW with the same decay split, same token shard
(read with numpy from the shard layout of data/token_shard.h), same thread count. Prints one JSON line.
usage: pytorch_peer_train.py --shard data/books/train.tok --layers 6 --d 192 --heads 6 --ctx 1024
                             --batch 8 --micro 4 --steps 20 --threads 2
"""
import argparse, json, math, time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, d, heads, ff):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d, bias=False)
        self.norm2 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, ff, bias=False)
        self.fc_out = nn.Linear(ff, d, bias=False)

    def forward(self, x, cos, sin, mask):
        b, t, d = x.shape
        hd = d // self.heads
        q, k, v = self.qkv(self.norm1(x)).split(d, dim=-1)
        q, k, v = (z.view(b, t, self.heads, hd).transpose(1, 2) for z in (q, k, v))
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(hd)
        att = att.masked_fill(mask, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(y)
        return x + self.fc_out(F.gelu(self.fc(self.norm2(x))))


def rope(x, cos, sin):
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class Gpt(nn.Module):
    def __init__(self, vocab, layers, d, heads, ctx):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(Block(d, heads, 4 * d) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        hd = d // heads
        inv = 1.0 / (10000 ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
        ang = torch.outer(torch.arange(ctx, dtype=torch.float64), inv)
        self.register_buffer("cos", ang.cos().float())
        self.register_buffer("sin", ang.sin().float())
        self.register_buffer("mask", torch.ones(ctx, ctx, dtype=torch.bool).triu(1))
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * layers) if name.endswith(("proj.weight", "fc_out.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx, targets):
        t = idx.shape[1]
        x = self.wte(idx)
        for blk in self.blocks:
            x = blk(x, self.cos[:t], self.sin[:t], self.mask[:t, :t])
        logits = self.ln_f(x) @ self.wte.weight.t()
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))


def main():
    ap = argparse.ArgumentParser()
    for name, default in [("layers", 6), ("d", 192), ("heads", 6), ("ctx", 1024), ("batch", 8), ("micro", 4),
                          ("steps", 20), ("threads", 2), ("vocab", 50304), ("warmup", 2)]:
        ap.add_argument(f"--{name}", type=int, default=default)
    ap.add_argument("--shard", default="data/books/train.tok")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    raw = np.memmap(a.shard, dtype=np.uint8, mode="r")
    ntok = int(np.frombuffer(raw[24:32].tobytes(), dtype=np.uint64)[0])
    tokens = np.frombuffer(raw[64:64 + 2 * ntok].tobytes(), dtype=np.uint16)
    model = Gpt(a.vocab, a.layers, a.d, a.heads, a.ctx)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.95))
    rng = np.random.default_rng(0)
    accum = a.batch // a.micro
    timed_tokens, timed_seconds, loss_value = 0, 0.0, 0.0
    for step in range(a.steps):
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        for _ in range(accum):
            offs = rng.integers(0, len(tokens) - a.ctx - 1, size=a.micro)
            rows = torch.from_numpy(np.stack([tokens[o:o + a.ctx + 1].astype(np.int64) for o in offs]))
            loss = model(rows[:, :-1], rows[:, 1:])
            (loss / accum).backward()
            loss_value = loss.item()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step >= a.warmup:
            timed_seconds += time.perf_counter() - start
            timed_tokens += a.batch * a.ctx
    print(json.dumps({"impl": "pytorch_eager", "torch": torch.__version__, "threads": a.threads,
                      "params": sum(p.numel() for p in model.parameters()),
                      "tokens_per_s": timed_tokens / timed_seconds, "last_loss": loss_value}))


if __name__ == "__main__":
    main()
