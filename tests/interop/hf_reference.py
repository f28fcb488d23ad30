#!/usr/bin/python3
"""Tiny random Hugging Face-layout models and their reference logits, for the interop/hf_import tests.

There is no transformers package here: the models are written in HF's on-disk layout (config.json as
transformers writes it, HF tensor names, safetensors via safetensors_writer.py) and the logits come from the
plain float64 PyTorch implementation below, one function per block, to be read against transformers'
modeling_gpt2.py / modeling_llama.py.

Usage (python3 is /usr/bin/python3, the one with torch 1.13):
  hf_reference.py OUT_DIR            write the fixtures
  hf_reference.py OUT_DIR --check    write them, then self-test: a second, loop-based implementation of both
                                     models must agree to 1e-10, the stored weights must read back, the logits
                                     must be finite, not tiny, and causal (changing a later token changes no
                                     earlier logit)

Layout of OUT_DIR:
  gpt2/         config.json (GPT2LMHeadModel), model.safetensors (F32; tied head: no lm_head.weight),
                reference.safetensors
  llama/        config.json (LlamaForCausalLM, llama3 rope_scaling), model-0000{1,2}-of-00002.safetensors +
                model.safetensors.index.json (F32, untied lm_head.weight), reference.safetensors
  llama_bf16/   the llama weights rounded to bf16 and stored as BF16 (same sharding); its reference is computed
                from the rounded weights
  llama_tied/   tie_word_embeddings true, rope_scaling null (default RoPE), model.safetensors, no lm_head.weight
  each reference.safetensors: "tokens" I64 [2, 24], "logits" F32 [2, 24, vocab] (computed in float64)

Note on the llama3 scaling with these numbers (head_dim 16, theta 50000, original context 16, low/high freq
factors 1/4): the wavelengths are 2*pi*50000^(i/8) >= 2*pi, so no frequency is in the "unchanged" band
(wavelen < 16/4 = 4); i = 0 (wavelen 6.28) is smoothed and the others are divided by the factor.
"""

import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_writer as stw  # noqa: E402

BATCH, SEQ = 2, 24

GPT2_CONFIG = {
    "activation_function": "gelu_new",
    "architectures": ["GPT2LMHeadModel"],
    "attn_pdrop": 0.1,
    "bos_token_id": 96,
    "embd_pdrop": 0.1,
    "eos_token_id": 96,
    "initializer_range": 0.02,
    "layer_norm_epsilon": 1e-05,
    "model_type": "gpt2",
    "n_embd": 48,
    "n_head": 4,
    "n_inner": None,
    "n_layer": 2,
    "n_positions": 64,
    "reorder_and_upcast_attn": False,
    "resid_pdrop": 0.1,
    "scale_attn_by_inverse_layer_idx": False,
    "scale_attn_weights": True,
    "summary_activation": None,
    "summary_first_dropout": 0.1,
    "summary_proj_to_labels": True,
    "summary_type": "cls_index",
    "summary_use_proj": True,
    "tie_word_embeddings": True,
    "torch_dtype": "float32",
    "transformers_version": "4.44.0",
    "use_cache": True,
    "vocab_size": 97,
}

LLAMA_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "head_dim": 16,
    "hidden_act": "silu",
    "hidden_size": 64,
    "initializer_range": 0.02,
    "intermediate_size": 96,
    "max_position_embeddings": 128,
    "mlp_bias": False,
    "model_type": "llama",
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "num_key_value_heads": 2,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-06,
    "rope_scaling": {
        "factor": 8.0,
        "high_freq_factor": 4.0,
        "low_freq_factor": 1.0,
        "original_max_position_embeddings": 16,
        "rope_type": "llama3",
    },
    "rope_theta": 50000.0,
    "tie_word_embeddings": False,
    "torch_dtype": "float32",
    "transformers_version": "4.44.0",
    "use_cache": True,
    "vocab_size": 101,
}


# ---------------------------------------------------------------------------------------------------------------
# Random weights in HF names and layouts

def _weight(g, *shape, std=0.2):
    return torch.randn(*shape, generator=g, dtype=torch.float64) * std


def _norm_weight(g, n):
    return 1.0 + _weight(g, n, std=0.1)


def gpt2_weights(cfg, seed=1234):
    """HF GPT-2 names; Conv1D weights are [in, out] (x @ W + b), the transpose of nn.Linear."""
    g = torch.Generator().manual_seed(seed)
    d, v = cfg["n_embd"], cfg["vocab_size"]
    inner = cfg["n_inner"] or 4 * d
    w = {"transformer.wte.weight": _weight(g, v, d), "transformer.wpe.weight": _weight(g, cfg["n_positions"], d)}
    for i in range(cfg["n_layer"]):
        p = "transformer.h.%d." % i
        w[p + "ln_1.weight"] = _norm_weight(g, d)
        w[p + "ln_1.bias"] = _weight(g, d, std=0.05)
        w[p + "attn.c_attn.weight"] = _weight(g, d, 3 * d)
        w[p + "attn.c_attn.bias"] = _weight(g, 3 * d, std=0.05)
        w[p + "attn.c_proj.weight"] = _weight(g, d, d)
        w[p + "attn.c_proj.bias"] = _weight(g, d, std=0.05)
        w[p + "ln_2.weight"] = _norm_weight(g, d)
        w[p + "ln_2.bias"] = _weight(g, d, std=0.05)
        w[p + "mlp.c_fc.weight"] = _weight(g, d, inner)
        w[p + "mlp.c_fc.bias"] = _weight(g, inner, std=0.05)
        w[p + "mlp.c_proj.weight"] = _weight(g, inner, d)
        w[p + "mlp.c_proj.bias"] = _weight(g, d, std=0.05)
    w["transformer.ln_f.weight"] = _norm_weight(g, d)
    w["transformer.ln_f.bias"] = _weight(g, d, std=0.05)
    return w


def llama_weights(cfg, seed=4321):
    """HF Llama names; nn.Linear weights are [out, in] (x @ W.T)."""
    g = torch.Generator().manual_seed(seed)
    d, v, ff = cfg["hidden_size"], cfg["vocab_size"], cfg["intermediate_size"]
    hd = cfg["head_dim"]
    q_out, kv_out = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    w = {"model.embed_tokens.weight": _weight(g, v, d)}
    for i in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % i
        w[p + "input_layernorm.weight"] = _norm_weight(g, d)
        w[p + "self_attn.q_proj.weight"] = _weight(g, q_out, d)
        w[p + "self_attn.k_proj.weight"] = _weight(g, kv_out, d)
        w[p + "self_attn.v_proj.weight"] = _weight(g, kv_out, d)
        w[p + "self_attn.o_proj.weight"] = _weight(g, d, q_out)
        w[p + "post_attention_layernorm.weight"] = _norm_weight(g, d)
        w[p + "mlp.gate_proj.weight"] = _weight(g, ff, d)
        w[p + "mlp.up_proj.weight"] = _weight(g, ff, d)
        w[p + "mlp.down_proj.weight"] = _weight(g, d, ff)
    w["model.norm.weight"] = _norm_weight(g, d)
    if not cfg["tie_word_embeddings"]:
        w["lm_head.weight"] = _weight(g, v, d)
    return w


# ---------------------------------------------------------------------------------------------------------------
# The reference implementation, float64 throughout

def causal_attention(q, k, v):
    """q [B, H, T, hd], k/v [B, H, T, hd]: softmax(q k^T / sqrt(hd) + causal mask) v."""
    t = q.shape[-2]
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    future = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)
    scores = scores.masked_fill(future, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def split_heads(x, heads):
    """[B, T, heads * hd] -> [B, heads, T, hd]"""
    b, t, _ = x.shape
    return x.view(b, t, heads, -1).transpose(1, 2)


def merge_heads(x):
    """[B, heads, T, hd] -> [B, T, heads * hd]"""
    b, h, t, hd = x.shape
    return x.transpose(1, 2).reshape(b, t, h * hd)


# GPT-2 (modeling_gpt2.py: GPT2Model, GPT2Block, GPT2Attention, GPT2MLP; tied lm_head)

def layer_norm(x, weight, bias, eps):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)  # biased, as nn.LayerNorm
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def gelu_new(x):
    """The tanh approximation (activations.py NewGELUActivation)."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def conv1d(x, weight, bias):
    """HF Conv1D: weight is [in, out]."""
    return x @ weight + bias


def gpt2_attention(x, w, p, cfg):
    d = cfg["n_embd"]
    qkv = conv1d(x, w[p + "attn.c_attn.weight"], w[p + "attn.c_attn.bias"])
    q, k, v = qkv.split(d, dim=-1)
    heads = cfg["n_head"]
    out = causal_attention(split_heads(q, heads), split_heads(k, heads), split_heads(v, heads))
    return conv1d(merge_heads(out), w[p + "attn.c_proj.weight"], w[p + "attn.c_proj.bias"])


def gpt2_mlp(x, w, p):
    h = gelu_new(conv1d(x, w[p + "mlp.c_fc.weight"], w[p + "mlp.c_fc.bias"]))
    return conv1d(h, w[p + "mlp.c_proj.weight"], w[p + "mlp.c_proj.bias"])


def gpt2_block(x, w, i, cfg):
    p, eps = "transformer.h.%d." % i, cfg["layer_norm_epsilon"]
    x = x + gpt2_attention(layer_norm(x, w[p + "ln_1.weight"], w[p + "ln_1.bias"], eps), w, p, cfg)
    return x + gpt2_mlp(layer_norm(x, w[p + "ln_2.weight"], w[p + "ln_2.bias"], eps), w, p)


def gpt2_logits(tokens, w, cfg):
    positions = torch.arange(tokens.shape[1])
    x = w["transformer.wte.weight"][tokens] + w["transformer.wpe.weight"][positions]
    for i in range(cfg["n_layer"]):
        x = gpt2_block(x, w, i, cfg)
    x = layer_norm(x, w["transformer.ln_f.weight"], w["transformer.ln_f.bias"], cfg["layer_norm_epsilon"])
    return x @ w["transformer.wte.weight"].T  # tied head


# Llama (modeling_llama.py: LlamaModel, LlamaDecoderLayer, LlamaAttention, LlamaMLP, LlamaRMSNorm,
# LlamaRotaryEmbedding; modeling_rope_utils.py: _compute_default_rope_parameters, _compute_llama3_parameters)

def rms_norm(x, weight, eps):
    return x * torch.rsqrt((x ** 2).mean(-1, keepdim=True) + eps) * weight


def rope_inv_freq(cfg):
    hd, theta = cfg["head_dim"], cfg["rope_theta"]
    inv_freq = 1.0 / theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    scaling = cfg.get("rope_scaling")
    if not scaling or scaling.get("rope_type", scaling.get("type")) == "default":
        return inv_freq
    assert scaling["rope_type"] == "llama3", scaling
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    orig = scaling["original_max_position_embeddings"]
    low_freq_wavelen, high_freq_wavelen = orig / low, orig / high
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (orig / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
    return torch.where(medium, smoothed, scaled)


def rope_cos_sin(cfg, t):
    """[T, hd] each; HF duplicates the frequencies: emb = cat(freqs, freqs)."""
    freqs = torch.arange(t, dtype=torch.float64)[:, None] * rope_inv_freq(cfg)[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rope(x, cos, sin):
    return x * cos + rotate_half(x) * sin


def repeat_kv(x, n_rep):
    """[B, H_kv, T, hd] -> [B, H_kv * n_rep, T, hd]; query head h reads kv head h // n_rep."""
    return x.repeat_interleave(n_rep, dim=1)


def llama_attention(x, w, p, cfg, cos, sin):
    h, h_kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    q = split_heads(x @ w[p + "self_attn.q_proj.weight"].T, h)
    k = split_heads(x @ w[p + "self_attn.k_proj.weight"].T, h_kv)
    v = split_heads(x @ w[p + "self_attn.v_proj.weight"].T, h_kv)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    out = causal_attention(q, repeat_kv(k, h // h_kv), repeat_kv(v, h // h_kv))
    return merge_heads(out) @ w[p + "self_attn.o_proj.weight"].T


def silu(x):
    return x * torch.sigmoid(x)


def llama_mlp(x, w, p):
    gate = x @ w[p + "mlp.gate_proj.weight"].T
    up = x @ w[p + "mlp.up_proj.weight"].T
    return (silu(gate) * up) @ w[p + "mlp.down_proj.weight"].T


def llama_layer(x, w, i, cfg, cos, sin):
    p, eps = "model.layers.%d." % i, cfg["rms_norm_eps"]
    x = x + llama_attention(rms_norm(x, w[p + "input_layernorm.weight"], eps), w, p, cfg, cos, sin)
    return x + llama_mlp(rms_norm(x, w[p + "post_attention_layernorm.weight"], eps), w, p)


def llama_logits(tokens, w, cfg):
    cos, sin = rope_cos_sin(cfg, tokens.shape[1])
    x = w["model.embed_tokens.weight"][tokens]
    for i in range(cfg["num_hidden_layers"]):
        x = llama_layer(x, w, i, cfg, cos, sin)
    x = rms_norm(x, w["model.norm.weight"], cfg["rms_norm_eps"])
    head = w["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else w["lm_head.weight"]
    return x @ head.T


# ---------------------------------------------------------------------------------------------------------------
# A second computation path for --check: per (batch, head, query) loops, torch.nn.functional where it has the
# op, RoPE as explicit 2-D rotations of the pairs (j, j + hd/2), llama3 frequencies with scalar if/else.

def _loop_attention(q, k, v, kv_head_of):
    """q [H, T, hd], k/v [H_kv, T, hd]."""
    h, t, hd = q.shape
    out = torch.zeros_like(q)
    for head in range(h):
        kh = kv_head_of(head)
        for i in range(t):
            s = torch.stack([torch.dot(q[head, i], k[kh, j]) for j in range(i + 1)]) / math.sqrt(hd)
            p = torch.exp(s - s.max())
            p = p / p.sum()
            out[head, i] = sum(p[j] * v[kh, j] for j in range(i + 1))
    return out


def gpt2_logits_loop(tokens, w, cfg):
    F = torch.nn.functional
    d, heads, eps = cfg["n_embd"], cfg["n_head"], cfg["layer_norm_epsilon"]
    hd = d // heads
    out = []
    for b in range(tokens.shape[0]):
        x = torch.stack([w["transformer.wte.weight"][tok] + w["transformer.wpe.weight"][t]
                         for t, tok in enumerate(tokens[b].tolist())])
        for i in range(cfg["n_layer"]):
            p = "transformer.h.%d." % i
            a = F.layer_norm(x, (d,), w[p + "ln_1.weight"], w[p + "ln_1.bias"], eps)
            qkv = F.linear(a, w[p + "attn.c_attn.weight"].T, w[p + "attn.c_attn.bias"])
            q, k, v = (qkv[:, j * d:(j + 1) * d].reshape(-1, heads, hd).transpose(0, 1) for j in range(3))
            att = _loop_attention(q, k, v, lambda head: head).transpose(0, 1).reshape(-1, d)
            x = x + F.linear(att, w[p + "attn.c_proj.weight"].T, w[p + "attn.c_proj.bias"])
            m = F.layer_norm(x, (d,), w[p + "ln_2.weight"], w[p + "ln_2.bias"], eps)
            m = F.gelu(F.linear(m, w[p + "mlp.c_fc.weight"].T, w[p + "mlp.c_fc.bias"]), approximate="tanh")
            x = x + F.linear(m, w[p + "mlp.c_proj.weight"].T, w[p + "mlp.c_proj.bias"])
        x = F.layer_norm(x, (d,), w["transformer.ln_f.weight"], w["transformer.ln_f.bias"], eps)
        out.append(F.linear(x, w["transformer.wte.weight"]))
    return torch.stack(out)


def _llama3_inv_freq_scalar(cfg):
    hd, theta = cfg["head_dim"], cfg["rope_theta"]
    scaling = cfg.get("rope_scaling")
    freqs = []
    for j in range(hd // 2):
        f = 1.0 / theta ** (2 * j / hd)
        if scaling:
            orig, factor = scaling["original_max_position_embeddings"], scaling["factor"]
            low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
            wavelen = 2 * math.pi / f
            if wavelen < orig / high:
                pass  # high frequency: unchanged
            elif wavelen > orig / low:
                f = f / factor  # low frequency: scaled
            else:
                smooth = (orig / wavelen - low) / (high - low)
                f = (1 - smooth) * f / factor + smooth * f
        freqs.append(f)
    return freqs


def _rotate_pairs(x, t, freqs):
    """x [H, hd] at position t: rotates (x_j, x_{j+hd/2}) by t * freqs[j]."""
    half = x.shape[-1] // 2
    y = x.clone()
    for j, f in enumerate(freqs):
        c, s = math.cos(t * f), math.sin(t * f)
        y[:, j] = x[:, j] * c - x[:, j + half] * s
        y[:, j + half] = x[:, j + half] * c + x[:, j] * s
    return y


def llama_logits_loop(tokens, w, cfg):
    F = torch.nn.functional
    h, h_kv, hd, eps = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"], cfg["rms_norm_eps"]
    freqs = _llama3_inv_freq_scalar(cfg)

    def norm(x, weight):
        return weight * (x / torch.sqrt((x * x).sum(-1, keepdim=True) / x.shape[-1] + eps))

    out = []
    for b in range(tokens.shape[0]):
        x = torch.stack([w["model.embed_tokens.weight"][tok] for tok in tokens[b].tolist()])
        for i in range(cfg["num_hidden_layers"]):
            p = "model.layers.%d." % i
            a = norm(x, w[p + "input_layernorm.weight"])
            q = F.linear(a, w[p + "self_attn.q_proj.weight"]).reshape(-1, h, hd)
            k = F.linear(a, w[p + "self_attn.k_proj.weight"]).reshape(-1, h_kv, hd)
            v = F.linear(a, w[p + "self_attn.v_proj.weight"]).reshape(-1, h_kv, hd)
            q = torch.stack([_rotate_pairs(q[t], t, freqs) for t in range(q.shape[0])])
            k = torch.stack([_rotate_pairs(k[t], t, freqs) for t in range(k.shape[0])])
            att = _loop_attention(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1),
                                  lambda head: head // (h // h_kv))
            x = x + F.linear(att.transpose(0, 1).reshape(x.shape[0], -1), w[p + "self_attn.o_proj.weight"])
            m = norm(x, w[p + "post_attention_layernorm.weight"])
            m = F.silu(F.linear(m, w[p + "mlp.gate_proj.weight"])) * F.linear(m, w[p + "mlp.up_proj.weight"])
            x = x + F.linear(m, w[p + "mlp.down_proj.weight"])
        x = norm(x, w["model.norm.weight"])
        head = w["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else w["lm_head.weight"]
        out.append(F.linear(x, head))
    return torch.stack(out)


# ---------------------------------------------------------------------------------------------------------------
# Writing the folders

def _tokens(vocab, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (BATCH, SEQ), generator=g, dtype=torch.int64)


def _write_model(directory, cfg, weights, stored_dtype, shards, tokens, logits_fn):
    """Stores `weights` cast to `stored_dtype`; the reference uses exactly the stored values (in float64)."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    stored = [(name, t.to(stored_dtype)) for name, t in weights.items()]
    if shards == 1:
        stw.write_safetensors(os.path.join(directory, "model.safetensors"), stored, {"format": "pt"})
    else:
        stw.write_sharded(directory, stored, shards, {"format": "pt"})
    used = {name: t.to(torch.float64) for name, t in stored}
    logits = logits_fn(tokens, used, cfg)
    stw.write_safetensors(os.path.join(directory, "reference.safetensors"),
                          [("tokens", tokens), ("logits", logits.to(torch.float32))], {"format": "pt"})
    return used, logits


def write_all(out):
    models = {}
    gpt2 = dict(GPT2_CONFIG)
    models["gpt2"] = (gpt2, *_write_model(os.path.join(out, "gpt2"), gpt2, gpt2_weights(gpt2), torch.float32, 1,
                                          _tokens(gpt2["vocab_size"], 1), gpt2_logits))
    llama = dict(LLAMA_CONFIG)
    weights = llama_weights(llama)
    tokens = _tokens(llama["vocab_size"], 2)
    models["llama"] = (llama, *_write_model(os.path.join(out, "llama"), llama, weights, torch.float32, 2, tokens,
                                            llama_logits))
    bf16 = dict(LLAMA_CONFIG, torch_dtype="bfloat16")
    models["llama_bf16"] = (bf16, *_write_model(os.path.join(out, "llama_bf16"), bf16, weights, torch.bfloat16, 2,
                                                tokens, llama_logits))
    tied = dict(LLAMA_CONFIG, tie_word_embeddings=True, rope_scaling=None)
    models["llama_tied"] = (tied, *_write_model(os.path.join(out, "llama_tied"), tied, llama_weights(tied, seed=99),
                                                torch.float32, 1, _tokens(tied["vocab_size"], 3), llama_logits))
    return models


def _read_checkpoint(directory):
    index = os.path.join(directory, stw.INDEX_NAME)
    files = ([os.path.join(directory, s) for s in sorted(set(json.load(open(index))["weight_map"].values()))]
             if os.path.exists(index) else [os.path.join(directory, "model.safetensors")])
    tensors = {}
    for path in files:
        entries, _, data = stw.read_safetensors(path)
        for name in entries:
            assert name not in tensors, name
            tensors[name] = stw.read_tensor(entries, data, name)
    return tensors


def check(out, models):
    for name, (cfg, weights, logits) in models.items():
        directory = os.path.join(out, name)
        stored = _read_checkpoint(directory)
        assert sorted(stored) == sorted(weights), (name, sorted(set(stored) ^ set(weights)))
        assert ("lm_head.weight" in stored) == (not cfg["tie_word_embeddings"]), name
        for tname, t in stored.items():
            assert torch.equal(t.to(torch.float64), weights[tname]), (name, tname)
            want = torch.bfloat16 if cfg["torch_dtype"] == "bfloat16" else torch.float32
            assert t.dtype == want, (name, tname, t.dtype)
        entries, _, data = stw.read_safetensors(os.path.join(directory, "reference.safetensors"))
        tokens, ref = stw.read_tensor(entries, data, "tokens"), stw.read_tensor(entries, data, "logits")
        assert tokens.shape == (BATCH, SEQ) and ref.shape == (BATCH, SEQ, cfg["vocab_size"]), name
        assert torch.isfinite(ref).all(), name
        assert ref.std() > 0.5, (name, ref.std())
        assert torch.equal(ref, logits.to(torch.float32)), name

        forward = gpt2_logits if cfg["model_type"] == "gpt2" else llama_logits
        loop = gpt2_logits_loop if cfg["model_type"] == "gpt2" else llama_logits_loop
        second = loop(tokens, weights, cfg)
        err = (second - logits).abs().max().item()
        assert err < 1e-10, (name, "loop path differs by", err)
        # Causality: a different last half changes nothing before it.
        changed = tokens.clone()
        changed[:, SEQ // 2:] = (changed[:, SEQ // 2:] + 1) % cfg["vocab_size"]
        other = forward(changed, weights, cfg)
        assert torch.equal(other[:, :SEQ // 2], logits[:, :SEQ // 2]), name
        assert not torch.allclose(other[:, SEQ // 2:], logits[:, SEQ // 2:]), name
        print("%-11s ok: logits std %.3f, loop path max |diff| %.2e" % (name, ref.std().item(), err))
    # The llama3 scaling must matter (else the importer's rope_scaling handling is untested) and bf16 rounding too.
    scaled = rope_inv_freq(models["llama"][0])
    plain = rope_inv_freq(dict(models["llama"][0], rope_scaling=None))
    assert not torch.allclose(scaled, plain)
    assert (models["llama"][2] - models["llama_bf16"][2]).abs().max() > 1e-3


def main(argv):
    if len(argv) < 2 or argv[1].startswith("-"):
        print(__doc__)
        return 2
    out = argv[1]
    models = write_all(out)
    if "--check" in argv[2:]:
        check(out, models)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
