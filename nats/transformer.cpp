#include "nats/transformer.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "nats/linear_cross_entropy.h"
#include "nats/masks.h"
#include "nats/model_shape.h"
#include "nats/qkv_heads.h"
#include "nats/scorer.h"
#include "nats/token_type.h"

namespace nats {

RmsNormImpl::RmsNormImpl(int64_t dim, double eps) : eps_(eps) {
  weight_ = register_parameter("weight", torch::ones({dim}));
}

at::Tensor RmsNormImpl::forward(const at::Tensor& x) {
  at::Tensor rms = at::rsqrt(x.pow(2).mean(-1, /*keepdim=*/true) + eps_);
  return x * rms * weight_;
}

at::Tensor ApplyRope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, int64_t offset) {
  const int64_t t = x.size(2);
  const int64_t half = x.size(3) / 2;
  at::Tensor c = cos.narrow(0, offset, t).to(x.dtype());  // [T, D/2], broadcast over B, H
  at::Tensor s = sin.narrow(0, offset, t).to(x.dtype());
  at::Tensor x1 = x.narrow(-1, 0, half);
  at::Tensor x2 = x.narrow(-1, half, half);
  return at::cat({x1 * c - x2 * s, x2 * c + x1 * s}, -1);
}

namespace {

torch::nn::AnyModule MakeNorm(const config::ModelConfig& m) {
  if (m.norm() == config::ModelConfig::RMS_NORM)
    return torch::nn::AnyModule(RmsNorm(m.d_model(), m.norm_eps()));
  return torch::nn::AnyModule(
      torch::nn::LayerNorm(torch::nn::LayerNormOptions({m.d_model()}).eps(m.norm_eps())));
}

// RoPE inverse frequencies [head_dim / 2] (double), with the config's rope_scaling applied as Hugging Face
// defines it (transformers' _compute_linear_scaling / _compute_llama3_parameters), so imported models see the
// same angles they were trained with.
at::Tensor RopeInverseFrequencies(const config::ModelConfig& m) {
  const int64_t head_dim = m.d_model() / m.n_head();
  at::Tensor inv_freq =
      1.0 / at::pow(m.rope_theta(), at::arange(0, head_dim, 2, at::kDouble) / static_cast<double>(head_dim));
  const config::RopeScaling& scaling = m.rope_scaling();
  switch (scaling.kind()) {
    case config::RopeScaling::NONE:
      return inv_freq;
    case config::RopeScaling::LINEAR:
      return inv_freq / scaling.factor();
    case config::RopeScaling::LLAMA3: {
      // Wavelengths longer than the original context / low_freq_factor are stretched by `factor`, shorter
      // than original / high_freq_factor kept, and the band between interpolates smoothly.
      const double original = scaling.original_context_length();
      const double low_wavelen = original / scaling.low_freq_factor();
      const double high_wavelen = original / scaling.high_freq_factor();
      at::Tensor wavelen = 2.0 * M_PI / inv_freq;
      at::Tensor smooth = (original / wavelen - scaling.low_freq_factor()) /
                          (scaling.high_freq_factor() - scaling.low_freq_factor());
      at::Tensor blended = (1.0 - smooth) * inv_freq / scaling.factor() + smooth * inv_freq;
      at::Tensor out = at::where(wavelen > low_wavelen, inv_freq / scaling.factor(), blended);
      return at::where(wavelen < high_wavelen, inv_freq, out);
    }
  }
  return inv_freq;
}

// A block's linear layer; `bias` as the config asks (GPT-2 has biases everywhere, Llama none, Qwen2 on
// q/k/v).
torch::nn::Linear MakeLinear(int64_t in, int64_t out, bool bias) {
  return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(bias));
}

}  // namespace

class BlockImpl : public torch::nn::Module {
 public:
  BlockImpl(const ModelSpec& spec, int layer) : spec_(spec), layer_(layer) {
    const auto& m = spec.model;
    n_head_ = m.n_head();
    n_kv_ = ResolvedKvHeads(m);
    head_dim_ = m.d_model() / m.n_head();
    use_nats_ = spec.nats_layers.at(layer);
    norm1_any_ = MakeNorm(m);
    register_module("norm1", norm1_any_.ptr());
    norm2_any_ = MakeNorm(m);
    register_module("norm2", norm2_any_.ptr());
    rope_ = m.position() == config::ModelConfig::ROPE;
    const bool bias = m.bias();
    qkv_ = register_module("qkv",
                           MakeLinear(m.d_model(), (n_head_ + 2 * n_kv_) * head_dim_, bias || m.qkv_bias()));
    proj_ = register_module("proj", MakeLinear(m.d_model(), m.d_model(), bias));
    const int ff = ResolvedFfnWidth(m);
    swiglu_ = m.mlp() == config::ModelConfig::SWIGLU;
    gelu_approximation_ = m.mlp() == config::ModelConfig::GELU_TANH ? "tanh" : "none";
    fc_ = register_module("fc", MakeLinear(m.d_model(), ff, bias));
    if (swiglu_) gate_ = register_module("gate", MakeLinear(m.d_model(), ff, bias));
    fc_out_ = register_module("fc_out", MakeLinear(ff, m.d_model(), bias));
    // nats.impl picks the kernel of dense layers too (FUSED: the blocked causal kernel; REFERENCE: matmuls).
    options_.impl = static_cast<AttentionImpl>(spec.nats.impl());
    if (use_nats_) {
      scorer_ = register_module("scorer", Scorer(m.d_model(), n_kv_));
      options_.window = spec.nats.window();
      options_.lambda = spec.nats.lambda();
      options_.grad_mode = static_cast<MaskGradMode>(spec.nats.grad_mode());
    }
  }

  // Residual output projections (scaled at init, GPT-2 style).
  std::vector<at::Tensor> ResidualProjections() { return {proj_->weight, fc_out_->weight}; }

  // chunk: sequence-parallel attention for a chunk starting at `offset` (nullptr: x is the whole sequence).
  at::Tensor forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, int64_t offset,
                     ChunkAttention* chunk, const NoiseKey* noise) {
    Projected p = Project(x, cos, sin, offset);
    const int64_t total_len = chunk != nullptr ? chunk->sequence_length() : offset + x.size(1);
    at::Tensor types;  // undefined: dense causal attention (every token global)
    if (use_nats_ && !dense_attention_) {
      if (type_override_.defined()) {
        last_types_ = OverrideTypes(x.size(0), offset, x.size(1));
        last_inference_types_ = last_types_;
        types = at::one_hot(last_types_.to(at::kLong), kNumTokenTypes).to(p.q.scalar_type());
      } else {
        // docs/method.md 2: the scorer reads the same normed input as Q/K/V (detached inside the scorer).
        ScorerOutput typed = scorer_->Forward(p.h, is_training(), spec_.nats.tau(), spec_.nats.global_bias(),
                                              offset, total_len, noise, layer_);
        types = typed.onehot;
        last_types_ = typed.types;
        last_inference_types_ = typed.inference_types;
      }
    }
    at::Tensor y = chunk != nullptr ? chunk->Attend(layer_, p.q, p.k, p.v.contiguous(), types, options_)
                                    : Attention(p.q, p.k, p.v.contiguous(), types, options_);
    return Finish(x, y);
  }

  // The same block on the next x tokens with a KV cache (docs/method.md 6): the scorer at inference (argmax +
  // global bias; position 0 forced global only when the cache is empty) feeds the cache's attention.
  at::Tensor ForwardCached(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                           LayerKvCache& cache) {
    const int64_t offset = cache.tokens();
    Projected p = Project(x, cos, sin, offset);
    at::Tensor types;
    if (cache.uses_types()) {
      TORCH_INTERNAL_ASSERT(use_nats_, "layer ", layer_, " has no scorer but its cache reads token types");
      if (type_override_.defined()) {
        types = OverrideTypes(x.size(0), offset, x.size(1));
      } else {
        types = scorer_->Forward(p.h, /*training=*/false, spec_.nats.tau(), spec_.nats.global_bias(), offset)
                    .types;
      }
    }
    return Finish(x, cache.Attend(p.q, p.k, p.v, types));
  }

  LayerCacheShape CacheShape(int64_t batch, at::ScalarType dtype, at::Device device) const {
    LayerCacheShape shape;
    shape.batch = batch;
    shape.kv_heads = n_kv_;
    shape.head_dim = head_dim_;
    shape.attention = options_;
    shape.dtype = dtype;
    shape.device = device;
    return shape;
  }

  bool uses_nats() const { return use_nats_; }
  void SetDenseAttention(bool dense) { dense_attention_ = dense; }

  // docs/method.md 5.4 as the trainer defines it (docs/training.md, "The sparsity regulariser"): lambda times
  // `scale`, so that the gradient average over ranks leaves lambda per sequence of the global batch.
  void SetRegulariser(double lambda, double scale) {
    if (use_nats_) options_.lambda = lambda * scale;
  }

  void SetTypeOverride(const at::Tensor& types) {
    TORCH_CHECK(!types.defined() || use_nats_, "layer ", layer_,
                " is dense: token types cannot be overridden");
    TORCH_CHECK(!types.defined() || (types.dim() == 3 && types.size(1) == n_kv_),
                "type override must be [B or 1, H_kv = ", n_kv_, ", N], got ",
                types.defined() ? types.sizes() : at::IntArrayRef{});
    type_override_ = types.defined() ? types.to(at::kChar) : types;
  }

  // Types [B, H_kv, T] int8 of the most recent forward (NAtS layers); undefined for dense layers.
  const at::Tensor& last_types() const { return last_types_; }
  const at::Tensor& last_inference_types() const { return last_inference_types_; }

  // Statistics of the most recent forward's types (NAtS layers); dense layers keep every token.
  LayerStats stats() const {
    LayerStats st;
    if (!use_nats_ || !last_types_.defined()) return st;
    torch::NoGradGuard no_grad;
    MaskStats ms = ComputeMaskStats(last_types_, spec_.nats.window());
    st.nats = true;
    at::Tensor fractions = ms.type_fraction.mean(0);
    st.frac_global = fractions[0].item<double>();
    st.frac_local = fractions[1].item<double>();
    st.frac_sliding = fractions[2].item<double>();
    st.mask_density = ms.density.mean().item<double>();
    st.kv_fraction = ms.kv_fraction.mean().item<double>();
    return st;
  }

 private:
  struct Projected {
    at::Tensor h;        // norm1(x): the input of Q/K/V and of the scorer
    at::Tensor q, k, v;  // [B, H, T, D], [B, H_kv, T, D] x2; RoPE applied to q and k
  };

  Projected Project(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, int64_t offset) {
    Projected p;
    p.h = norm1_any_.forward(x);
    // One pass from the fused projection to contiguous heads, RoPE included (learned absolute positions were
    // added to the embeddings instead); nats/qkv_heads.h.
    QkvHeads heads = SplitQkvHeads(qkv_->forward(p.h), n_head_, n_kv_, head_dim_, rope_ ? cos : at::Tensor(),
                                   rope_ ? sin : at::Tensor(), offset);
    p.q = std::move(heads.q);
    p.k = std::move(heads.k);
    p.v = std::move(heads.v);
    return p;
  }

  // Attention output y [B, H, T, D] -> residual, projection, MLP.
  at::Tensor Finish(const at::Tensor& x, const at::Tensor& y_heads) {
    const int64_t b = x.size(0), t = x.size(1);
    at::Tensor y = y_heads.transpose(1, 2).contiguous().view({b, t, n_head_ * head_dim_});
    at::Tensor out = x + proj_->forward(y);
    at::Tensor h2 = norm2_any_.forward(out);
    at::Tensor mlp = swiglu_ ? fc_out_->forward(at::silu(gate_->forward(h2)) * fc_->forward(h2))
                             : fc_out_->forward(at::gelu(fc_->forward(h2), gelu_approximation_));
    return out + mlp;
  }

  // Types [B, H_kv, t] int8 of positions offset..offset+t-1 from the test/benchmark override.
  at::Tensor OverrideTypes(int64_t batch, int64_t offset, int64_t t) const {
    TORCH_CHECK(offset + t <= type_override_.size(2), "type override covers ", type_override_.size(2),
                " positions, the model needs ", offset + t);
    TORCH_CHECK(type_override_.size(0) == batch || type_override_.size(0) == 1, "type override batch ",
                type_override_.size(0), " does not match ", batch);
    return type_override_.narrow(2, offset, t).expand({batch, n_kv_, t}).contiguous();
  }

  ModelSpec spec_;
  int layer_;
  int64_t n_head_, n_kv_, head_dim_;
  bool use_nats_ = false, swiglu_ = false, rope_ = true;
  std::string gelu_approximation_ = "none";  // at::gelu's: "tanh" for GELU_TANH
  bool dense_attention_ = false;             // TransformerImpl::SetDenseAttention
  torch::nn::AnyModule norm1_any_, norm2_any_;
  torch::nn::Linear qkv_{nullptr}, proj_{nullptr}, fc_{nullptr}, gate_{nullptr}, fc_out_{nullptr};
  Scorer scorer_{nullptr};
  AttentionOptions options_;
  at::Tensor last_types_;            // [B, H_kv, T] int8 of the last forward, for statistics
  at::Tensor last_inference_types_;  // the same forward's types as inference would pick them (no noise)
  at::Tensor type_override_;         // [B or 1, H_kv, N] int8 by absolute position; tests and benchmarks only
};

TransformerImpl::TransformerImpl(const ModelSpec& spec) : spec_(spec), lambda_(spec.nats.lambda()) {
  const auto& m = spec.model;
  TORCH_CHECK(static_cast<int>(spec_.nats_layers.size()) == m.n_layer(),
              "nats_layers must have n_layer entries");
  wte_ = register_module("wte", torch::nn::Embedding(m.vocab_size(), m.d_model()));
  if (m.position() == config::ModelConfig::LEARNED) {
    wpe_ = register_module("wpe", torch::nn::Embedding(MaxLearnedPositions(m), m.d_model()));
  }
  for (int l = 0; l < m.n_layer(); ++l) {
    blocks_.push_back(register_module("h" + std::to_string(l), std::make_shared<BlockImpl>(spec_, l)));
  }
  final_norm_ = MakeNorm(m);
  register_module("ln_f", final_norm_.ptr());
  if (!m.tie_embeddings()) {
    lm_head_ = register_module(
        "lm_head", torch::nn::Linear(torch::nn::LinearOptions(m.d_model(), m.vocab_size()).bias(false)));
  }
  // RoPE tables, sized for the training context; decoding beyond it extends them on demand.
  const int64_t max_t = std::max<int64_t>(m.context_length(), 1);
  at::Tensor angles = at::outer(at::arange(max_t, at::kDouble), RopeInverseFrequencies(m));
  rope_cos_ = register_buffer("rope_cos", angles.cos().to(at::kFloat));
  rope_sin_ = register_buffer("rope_sin", angles.sin().to(at::kFloat));

  // GPT-2 initialisation: N(0, std) everywhere, residual projections scaled by 1/sqrt(2 L).
  torch::NoGradGuard no_grad;
  const double std = m.init_std();
  for (auto& p : named_parameters()) {
    if (p.key().find("norm") != std::string::npos || p.key().find("ln_f") != std::string::npos) continue;
    if (p.value().dim() >= 2) p.value().normal_(0.0, std);
    if (p.value().dim() == 1) p.value().zero_();  // linear biases (GPT-2 starts them at zero)
  }
  if (wpe_) wpe_->weight.normal_(0.0, 0.01);  // GPT-2's position-table init
  for (auto& block : blocks_) {
    for (at::Tensor w : block->ResidualProjections()) w.normal_(0.0, std / std::sqrt(2.0 * m.n_layer()));
  }
}

void TransformerImpl::EnsureRope(int64_t end) {
  if (end <= rope_cos_.size(0)) return;
  // Extend the RoPE tables (inference beyond the training context). Doubling keeps token-by-token decoding
  // from rebuilding the whole table at every step; each row depends only on its position, so the size never
  // changes a value.
  const int64_t rows = std::max<int64_t>(end, 2 * rope_cos_.size(0));
  at::Tensor angles = at::outer(at::arange(rows, at::kDouble), RopeInverseFrequencies(spec_.model));
  rope_cos_.set_(angles.cos().to(rope_cos_.options()));
  rope_sin_.set_(angles.sin().to(rope_sin_.options()));
}

at::Tensor TransformerImpl::Embed(const at::Tensor& tokens, int64_t position_offset) {
  at::Tensor x = wte_->forward(tokens);
  if (!wpe_) return x;
  const int64_t end = position_offset + tokens.size(1);
  TORCH_CHECK(end <= wpe_->weight.size(0), "position ", end - 1, " is beyond the learned position table (",
              wpe_->weight.size(0),
              " rows, model.max_position_embeddings): this model cannot see sequences longer "
              "than that");
  return x + wpe_->forward(at::arange(position_offset, end, tokens.options()));
}

at::Tensor TransformerImpl::forward(const at::Tensor& tokens, int64_t position_offset) {
  return Logits(Body(tokens, position_offset));
}

at::Tensor TransformerImpl::Body(const at::Tensor& tokens, int64_t position_offset) {
  TORCH_CHECK(tokens.dim() == 2, "tokens must be [B, T]");
  if (chunk_ != nullptr) {
    TORCH_CHECK(position_offset == 0 || position_offset == chunk_->chunk_begin(), "forward at offset ",
                position_offset, " but the sequence-parallel chunk starts at ", chunk_->chunk_begin());
    position_offset = chunk_->chunk_begin();
  }
  EnsureRope(position_offset + tokens.size(1));
  at::Tensor x = Embed(tokens, position_offset);
  const NoiseKey* noise = has_noise_key_ ? &noise_key_ : nullptr;
  for (auto& block : blocks_) x = block->forward(x, rope_cos_, rope_sin_, position_offset, chunk_, noise);
  return x;
}

at::Tensor TransformerImpl::Logits(const at::Tensor& hidden) { return Head(final_norm_.forward(hidden)); }

at::Tensor TransformerImpl::Head(const at::Tensor& final_hidden) {
  return spec_.model.tie_embeddings() ? at::matmul(final_hidden, wte_->weight.t())
                                      : lm_head_->forward(final_hidden);
}

at::Tensor TransformerImpl::FinalHidden(const at::Tensor& tokens, int64_t position_offset) {
  return final_norm_.forward(Body(tokens, position_offset));
}

void TransformerImpl::SetDenseAttention(bool dense) {
  dense_attention_ = dense;
  for (auto& block : blocks_) block->SetDenseAttention(dense);
}

std::unique_ptr<KvCache> TransformerImpl::NewCache(const CachePolicyConfig& policy, int64_t batch) const {
  TORCH_CHECK(batch >= 1, "cache batch must be >= 1, got ", batch);
  const at::Tensor& w = wte_->weight;
  std::vector<std::unique_ptr<LayerKvCache>> layers;
  for (const auto& block : blocks_) {
    layers.push_back(
        MakeLayerCache(policy, block->uses_nats(), block->CacheShape(batch, w.scalar_type(), w.device())));
  }
  return std::make_unique<KvCache>(policy, std::move(layers));
}

at::Tensor TransformerImpl::CachedForward(const at::Tensor& tokens, KvCache& cache, bool all_logits) {
  TORCH_CHECK(tokens.dim() == 2 && tokens.size(1) >= 1, "tokens must be [B, T] with T >= 1, got ",
              tokens.sizes());
  TORCH_CHECK(cache.num_layers() == static_cast<int>(blocks_.size()), "cache has ", cache.num_layers(),
              " layers, the model ", blocks_.size(), "; make it with NewCache");
  torch::NoGradGuard no_grad;
  const int64_t t = tokens.size(1);
  EnsureRope(cache.tokens() + t);
  at::Tensor x = Embed(tokens, cache.tokens());
  for (size_t l = 0; l < blocks_.size(); ++l) {
    x = blocks_[l]->ForwardCached(x, rope_cos_, rope_sin_, cache.layer(static_cast<int>(l)));
  }
  if (!all_logits) return Logits(x.narrow(1, t - 1, 1)).squeeze(1);
  return Logits(x);
}

at::Tensor TransformerImpl::Prefill(const at::Tensor& tokens, KvCache& cache, bool all_logits) {
  TORCH_CHECK(cache.tokens() == 0, "Prefill needs an empty cache (it holds ", cache.tokens(),
              " positions); continue a sequence with Decode");
  return CachedForward(tokens, cache, all_logits);
}

at::Tensor TransformerImpl::Decode(const at::Tensor& tokens, KvCache& cache, bool all_logits) {
  return CachedForward(tokens, cache, all_logits);
}

void TransformerImpl::SetChunkAttention(ChunkAttention* chunk) { chunk_ = chunk; }

void TransformerImpl::SetRegulariserScale(double scale) {
  TORCH_CHECK(scale > 0 && std::isfinite(scale), "regulariser scale must be positive and finite, got ",
              scale);
  regulariser_scale_ = scale;
  for (auto& block : blocks_) block->SetRegulariser(lambda_, regulariser_scale_);
}

void TransformerImpl::SetLambda(double lambda) {
  TORCH_CHECK(lambda >= 0 && std::isfinite(lambda), "lambda must be non-negative and finite, got ", lambda);
  lambda_ = lambda;
  for (auto& block : blocks_) block->SetRegulariser(lambda_, regulariser_scale_);
}

void TransformerImpl::SetTypeOverride(int layer, const at::Tensor& types) {
  TORCH_CHECK(layer >= 0 && layer < static_cast<int>(blocks_.size()), "no layer ", layer);
  blocks_[layer]->SetTypeOverride(types);
}

at::Tensor TransformerImpl::Loss(const at::Tensor& inputs, const at::Tensor& targets) {
  // The head and the loss fused (nats/linear_cross_entropy.h): no separate [B T, V] log-probabilities or
  // gradients.
  at::Tensor x = final_norm_.forward(Body(inputs, 0));
  const at::Tensor& head = spec_.model.tie_embeddings() ? wte_->weight : lm_head_->weight;
  return LinearCrossEntropy(x.reshape({-1, x.size(-1)}), head, targets.reshape({-1}));
}

int64_t TransformerImpl::NumParameters() const {
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.numel();
  return n;
}

double TransformerImpl::FlopsPerToken() const {
  // 6 N for the matmuls (forward + backward) plus 6 L T d for the causal attention scores/values
  // (12 L T d for full T x T, halved by causality), as in the PaLM / nanoGPT estimate.
  const auto& m = spec_.model;
  return 6.0 * static_cast<double>(NumParameters()) +
         6.0 * m.n_layer() * static_cast<double>(m.context_length()) * m.d_model();
}

std::vector<at::Tensor> TransformerImpl::LastLayerInferenceTypes() const {
  std::vector<at::Tensor> types;
  for (const Block& b : blocks_) types.push_back(b->last_inference_types());
  return types;
}

std::vector<at::Tensor> TransformerImpl::LastLayerTypes() const {
  std::vector<at::Tensor> types;
  for (const Block& b : blocks_) types.push_back(b->last_types());
  return types;
}

std::vector<LayerStats> TransformerImpl::LastLayerStats() const {
  std::vector<LayerStats> out;
  for (const auto& block : blocks_) out.push_back(block->stats());
  return out;
}

}  // namespace nats
