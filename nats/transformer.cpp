#include "nats/transformer.h"

#include <torch/torch.h>

#include <cmath>

#include "nats/masks.h"
#include "nats/scorer.h"

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
  if (m.norm() == config::ModelConfig::RMS_NORM) return torch::nn::AnyModule(RmsNorm(m.d_model()));
  return torch::nn::AnyModule(torch::nn::LayerNorm(torch::nn::LayerNormOptions({m.d_model()})));
}

int KvHeads(const config::ModelConfig& m) { return m.n_kv_head() > 0 ? m.n_kv_head() : m.n_head(); }

int FfnWidth(const config::ModelConfig& m) {
  if (m.d_ff() > 0) return m.d_ff();
  if (m.mlp() == config::ModelConfig::SWIGLU) return (8 * m.d_model() / 3 + 63) / 64 * 64;
  return 4 * m.d_model();
}

}  // namespace

class BlockImpl : public torch::nn::Module {
 public:
  BlockImpl(const ModelSpec& spec, int layer) : spec_(spec), layer_(layer) {
    const auto& m = spec.model;
    n_head_ = m.n_head();
    n_kv_ = KvHeads(m);
    head_dim_ = m.d_model() / m.n_head();
    use_nats_ = spec.nats_layers.at(layer);
    norm1_any_ = MakeNorm(m);
    register_module("norm1", norm1_any_.ptr());
    norm2_any_ = MakeNorm(m);
    register_module("norm2", norm2_any_.ptr());
    qkv_ = register_module(
        "qkv", torch::nn::Linear(torch::nn::LinearOptions(m.d_model(), (n_head_ + 2 * n_kv_) * head_dim_).bias(false)));
    proj_ = register_module("proj", torch::nn::Linear(torch::nn::LinearOptions(m.d_model(), m.d_model()).bias(false)));
    const int ff = FfnWidth(m);
    swiglu_ = m.mlp() == config::ModelConfig::SWIGLU;
    fc_ = register_module("fc", torch::nn::Linear(torch::nn::LinearOptions(m.d_model(), ff).bias(false)));
    if (swiglu_) {
      gate_ = register_module("gate", torch::nn::Linear(torch::nn::LinearOptions(m.d_model(), ff).bias(false)));
    }
    fc_out_ = register_module("fc_out", torch::nn::Linear(torch::nn::LinearOptions(ff, m.d_model()).bias(false)));
    if (use_nats_) {
      scorer_ = register_module("scorer", Scorer(m.d_model(), n_kv_));
      options_.window = spec.nats.window();
      options_.lambda = spec.nats.lambda();
      options_.grad_mode = static_cast<MaskGradMode>(spec.nats.grad_mode());
      options_.impl = static_cast<AttentionImpl>(spec.nats.impl());
    }
  }

  // Residual output projections (scaled at init, GPT-2 style).
  std::vector<at::Tensor> ResidualProjections() { return {proj_->weight, fc_out_->weight}; }

  at::Tensor forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, int64_t offset) {
    const int64_t b = x.size(0), t = x.size(1);
    at::Tensor h = norm1_any_.forward(x);
    at::Tensor qkv = qkv_->forward(h);
    at::Tensor q = qkv.narrow(-1, 0, n_head_ * head_dim_).view({b, t, n_head_, head_dim_}).transpose(1, 2);
    at::Tensor k =
        qkv.narrow(-1, n_head_ * head_dim_, n_kv_ * head_dim_).view({b, t, n_kv_, head_dim_}).transpose(1, 2);
    at::Tensor v = qkv.narrow(-1, (n_head_ + n_kv_) * head_dim_, n_kv_ * head_dim_)
                       .view({b, t, n_kv_, head_dim_})
                       .transpose(1, 2);
    q = ApplyRope(q, cos, sin, offset);
    k = ApplyRope(k, cos, sin, offset);
    at::Tensor types;  // undefined: dense causal attention (every token global)
    if (use_nats_) {
      // NATS_SPEC 2: the scorer reads the same normed input as Q/K/V (detached inside the scorer).
      ScorerOutput typed = scorer_->Forward(h, is_training(), spec_.nats.tau(), spec_.nats.global_bias(), offset);
      types = typed.onehot;
      last_types_ = typed.types;
    }
    at::Tensor y = Attention(q, k, v.contiguous(), types, options_);
    y = y.transpose(1, 2).contiguous().view({b, t, n_head_ * head_dim_});
    at::Tensor out = x + proj_->forward(y);
    at::Tensor h2 = norm2_any_.forward(out);
    at::Tensor mlp = swiglu_ ? fc_out_->forward(at::silu(gate_->forward(h2)) * fc_->forward(h2))
                             : fc_out_->forward(at::gelu(fc_->forward(h2)));
    return out + mlp;
  }

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
  ModelSpec spec_;
  int layer_;
  int64_t n_head_, n_kv_, head_dim_;
  bool use_nats_ = false, swiglu_ = false;
  torch::nn::AnyModule norm1_any_, norm2_any_;
  torch::nn::Linear qkv_{nullptr}, proj_{nullptr}, fc_{nullptr}, gate_{nullptr}, fc_out_{nullptr};
  Scorer scorer_{nullptr};
  AttentionOptions options_;
  at::Tensor last_types_;  // [B, H_kv, T] int8 of the last forward, for statistics
};

TransformerImpl::TransformerImpl(const ModelSpec& spec) : spec_(spec) {
  const auto& m = spec.model;
  TORCH_CHECK(static_cast<int>(spec_.nats_layers.size()) == m.n_layer(), "nats_layers must have n_layer entries");
  wte_ = register_module("wte", torch::nn::Embedding(m.vocab_size(), m.d_model()));
  for (int l = 0; l < m.n_layer(); ++l) {
    blocks_.push_back(register_module("h" + std::to_string(l), std::make_shared<BlockImpl>(spec_, l)));
  }
  final_norm_ = MakeNorm(m);
  register_module("ln_f", final_norm_.ptr());
  if (!m.tie_embeddings()) {
    lm_head_ = register_module("lm_head",
                               torch::nn::Linear(torch::nn::LinearOptions(m.d_model(), m.vocab_size()).bias(false)));
  }
  // RoPE tables, sized for the training context; decoding beyond it extends them on demand.
  const int64_t head_dim = m.d_model() / m.n_head();
  const int64_t max_t = std::max<int64_t>(m.context_length(), 1);
  at::Tensor inv_freq =
      1.0 / at::pow(m.rope_theta(), at::arange(0, head_dim, 2, at::kDouble) / static_cast<double>(head_dim));
  at::Tensor angles = at::outer(at::arange(max_t, at::kDouble), inv_freq);
  rope_cos_ = register_buffer("rope_cos", angles.cos().to(at::kFloat));
  rope_sin_ = register_buffer("rope_sin", angles.sin().to(at::kFloat));

  // GPT-2 initialisation: N(0, std) everywhere, residual projections scaled by 1/sqrt(2 L).
  torch::NoGradGuard no_grad;
  const double std = m.init_std();
  for (auto& p : named_parameters()) {
    if (p.key().find("norm") != std::string::npos || p.key().find("ln_f") != std::string::npos) continue;
    if (p.value().dim() >= 2) p.value().normal_(0.0, std);
  }
  for (auto& block : blocks_) {
    for (at::Tensor w : block->ResidualProjections()) w.normal_(0.0, std / std::sqrt(2.0 * m.n_layer()));
  }
}

at::Tensor TransformerImpl::forward(const at::Tensor& tokens, int64_t position_offset) {
  TORCH_CHECK(tokens.dim() == 2, "tokens must be [B, T]");
  const int64_t end = position_offset + tokens.size(1);
  if (end > rope_cos_.size(0)) {
    // Extend the RoPE tables (inference beyond the training context).
    const auto& m = spec_.model;
    const int64_t head_dim = m.d_model() / m.n_head();
    at::Tensor inv_freq =
        1.0 / at::pow(m.rope_theta(), at::arange(0, head_dim, 2, at::kDouble) / static_cast<double>(head_dim));
    at::Tensor angles = at::outer(at::arange(end, at::kDouble), inv_freq);
    rope_cos_.set_(angles.cos().to(rope_cos_.options()));
    rope_sin_.set_(angles.sin().to(rope_sin_.options()));
  }
  at::Tensor x = wte_->forward(tokens);
  for (auto& block : blocks_) x = block->forward(x, rope_cos_, rope_sin_, position_offset);
  x = final_norm_.forward(x);
  return spec_.model.tie_embeddings() ? at::matmul(x, wte_->weight.t()) : lm_head_->forward(x);
}

at::Tensor TransformerImpl::Loss(const at::Tensor& inputs, const at::Tensor& targets) {
  at::Tensor logits = forward(inputs);
  return at::cross_entropy_loss(logits.view({-1, logits.size(-1)}), targets.reshape({-1}));
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

std::vector<LayerStats> TransformerImpl::LastLayerStats() const {
  std::vector<LayerStats> out;
  for (const auto& block : blocks_) out.push_back(block->stats());
  return out;
}

}  // namespace nats
