#!/usr/bin/env python3
"""An independent PyTorch training loop of the same model as nats/transformer.cpp, for throughput ratios.

Same architecture (pre-norm LayerNorm, RoPE halves convention, GELU MLP, no biases in Linear layers, tied
embeddings), same global batch / micro batch / context, AdamW with the same decay split, same token shard
(read with numpy from the shard layout of data/token_shard.h), same thread count. Prints one JSON line.

CPU (the default; what bench/train_throughput.sh and bench/cpu_speed.sh run):
  pytorch_peer_train.py --shard data/books/train.tok --layers 6 --d 192 --heads 6 --ctx 1024
                        --batch 8 --micro 4 --steps 20 --threads 2
GPU (the peer of `nats train` with train.device=CUDA train.precision=BF16; gpt2_124m, no corpus needed):
  pytorch_peer_train.py --synthetic --device cuda --dtype bf16 --attention sdpa --layers 12 --d 768
                        --heads 12 --ctx 1024 --batch 16 --micro 16 --vocab 50304 --steps 10 [--compile]
Options:
  --device cpu|cuda     where the model, batches and optimizer live (default cpu).
  --dtype fp32|bf16     bf16: forward + loss under torch.autocast(device, torch.bfloat16); the master weights,
                        gradients and AdamW state stay fp32 (as our trainer's train.precision = BF16).
  --attention manual|sdpa  manual (default): masked matmul-softmax; sdpa:
                        F.scaled_dot_product_attention(q, k, v, is_causal=True) (flash attention on the GPU;
                        needs torch >= 2.0).
  --compile             torch.compile the model (forward + loss; needs torch >= 2.0); the warm-up steps
                        include the compilation.
  --synthetic           uniform random token ids in [0, --vocab) instead of reading --shard.
  --warmup N            first N steps not timed (default 2).
  --peak_tflops X       peak for the MFU (default 989 = H200 dense bf16 on cuda; on cpu only when given).
  --attn_flops causal|full  attention FLOPs convention (see flops_per_token; default causal, as ours).
The JSON adds flops_per_token always, mfu when a peak is known, peak_mem_gb (and the GPU's name) on cuda.
"""
import argparse, json, math, time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def has_sdpa():
    return hasattr(F, "scaled_dot_product_attention")


class Block(nn.Module):
    def __init__(self, d, heads, ff, attention="manual"):
        super().__init__()
        self.heads = heads
        self.attention = attention
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
        if self.attention == "sdpa":
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # scale 1 / sqrt(hd), as below
        else:
            att = (q @ k.transpose(-2, -1)) / math.sqrt(hd)
            att = att.masked_fill(mask, float("-inf")).softmax(-1)
            y = att @ v
        y = y.transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(y)
        return x + self.fc_out(F.gelu(self.fc(self.norm2(x))))


def rope(x, cos, sin):
    # The tables in x's dtype, as ApplyRope in nats/transformer.cpp (a no-op in fp32; under bf16 autocast it
    # keeps q and k bf16 like v rather than promoting them to fp32).
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class Gpt(nn.Module):
    def __init__(self, vocab, layers, d, heads, ctx, attention="manual"):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(Block(d, heads, 4 * d, attention) for _ in range(layers))
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


def flops_per_token(params, layers, ctx, d, attn_flops):
    # 6 N for the matmuls, forward + backward (N = all parameters, the tied embedding/head counted once; there
    # is no position table to leave out), plus the attention scores and values: 12 L T d per token for the
    # full T x T (the PaLM / nanoGPT estimate_mfu term), or 6 L T d with causality halving it. The default,
    # causal, is what nats/transformer.cpp's FlopsPerToken (our trainer's MFU) uses, so that the two MFUs
    # are in the same units; --attn_flops full gives nanoGPT's number.
    per_layer = 12 if attn_flops == "full" else 6
    return 6.0 * params + per_layer * layers * ctx * d


def main():
    ap = argparse.ArgumentParser()
    for name, default in [("layers", 6), ("d", 192), ("heads", 6), ("ctx", 1024), ("batch", 8), ("micro", 4),
                          ("steps", 20), ("threads", 2), ("vocab", 50304), ("warmup", 2)]:
        ap.add_argument(f"--{name}", type=int, default=default)
    ap.add_argument("--shard", default="data/books/train.tok")
    ap.add_argument("--synthetic", action="store_true", help="random token ids instead of --shard")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--attention", choices=["manual", "sdpa"], default="manual")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (torch >= 2.0)")
    ap.add_argument("--peak_tflops", type=float, default=None,
                    help="peak for the MFU (default 989, H200 dense bf16, on cuda; none on cpu)")
    ap.add_argument("--attn_flops", choices=["causal", "full"], default="causal")
    a = ap.parse_args()
    if a.attention == "sdpa" and not has_sdpa():
        ap.error(f"--attention sdpa needs torch.nn.functional.scaled_dot_product_attention (torch >= 2.0); "
                 f"this torch is {torch.__version__}")
    if a.compile and not hasattr(torch, "compile"):
        ap.error(f"--compile needs torch.compile (torch >= 2.0); this torch is {torch.__version__}")
    if a.device == "cuda" and not torch.cuda.is_available():
        ap.error(f"--device cuda but torch {torch.__version__} sees no CUDA device")
    if a.batch % a.micro != 0:
        ap.error(f"--batch {a.batch} must be a multiple of --micro {a.micro}")
    if a.d % a.heads != 0 or (a.d // a.heads) % 2 != 0:
        ap.error(f"--d {a.d} / --heads {a.heads} must give an even head dimension")
    if not 0 <= a.warmup < a.steps:
        ap.error(f"--warmup {a.warmup} must leave at least one timed step of --steps {a.steps}")
    cuda = a.device == "cuda"
    peak_tflops = a.peak_tflops if a.peak_tflops is not None else (989.0 if cuda else None)
    device = torch.device(a.device)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    if a.synthetic:
        tokens = None
        gen = torch.Generator(device=device)
        gen.manual_seed(0)
    else:
        raw = np.memmap(a.shard, dtype=np.uint8, mode="r")
        ntok = int(np.frombuffer(raw[24:32].tobytes(), dtype=np.uint64)[0])
        tokens = np.frombuffer(raw[64:64 + 2 * ntok].tobytes(), dtype=np.uint16)
    model = Gpt(a.vocab, a.layers, a.d, a.heads, a.ctx, a.attention).to(device)
    params = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.95))
    step_model = torch.compile(model) if a.compile else model
    bf16 = a.dtype == "bf16"

    def batch_rows():
        if tokens is None:
            return torch.randint(0, a.vocab, (a.micro, a.ctx + 1), generator=gen, device=device)
        offs = rng.integers(0, len(tokens) - a.ctx - 1, size=a.micro)
        rows = torch.from_numpy(np.stack([tokens[o:o + a.ctx + 1].astype(np.int64) for o in offs]))
        return rows.pin_memory().to(device, non_blocking=True) if cuda else rows

    def sync():
        if cuda:
            torch.cuda.synchronize()

    rng = np.random.default_rng(0)
    accum = a.batch // a.micro
    timed_tokens, timed_seconds, loss_value = 0, 0.0, 0.0
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for step in range(a.steps):
        sync()
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        for _ in range(accum):
            rows = batch_rows()
            with torch.autocast(device_type=a.device, dtype=torch.bfloat16, enabled=bf16):
                loss = step_model(rows[:, :-1], rows[:, 1:])
            (loss / accum).backward()
            last_loss = loss.detach()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sync()
        if step >= a.warmup:
            timed_seconds += time.perf_counter() - start
            timed_tokens += a.batch * a.ctx
        loss_value = last_loss.item()
    tokens_per_s = timed_tokens / timed_seconds
    fpt = flops_per_token(params, a.layers, a.ctx, a.d, a.attn_flops)
    out = {"impl": "pytorch_compile" if a.compile else "pytorch_eager", "torch": torch.__version__,
           "threads": a.threads, "params": params, "tokens_per_s": tokens_per_s, "last_loss": loss_value,
           "device": a.device, "dtype": a.dtype, "attention": a.attention, "compile": a.compile,
           "synthetic": a.synthetic, "timed_steps": a.steps - a.warmup, "flops_per_token": fpt,
           "attn_flops": a.attn_flops}
    if peak_tflops:
        out["peak_tflops"] = peak_tflops
        out["mfu"] = tokens_per_s * fpt / (peak_tflops * 1e12)
    if cuda:
        out["gpu"] = torch.cuda.get_device_name(device)
        out["peak_mem_gb"] = torch.cuda.max_memory_allocated(device) / 1e9  # GB = 1e9 bytes
    print(json.dumps(out))


if __name__ == "__main__":
    main()
