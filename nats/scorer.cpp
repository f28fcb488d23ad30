// Token-type scorer: straight-through Gumbel-softmax in training, biased argmax at inference (docs/method.md
// 2).
#include "nats/scorer.h"

#include <torch/torch.h>

#include "nats/token_type.h"

namespace nats {
namespace {

constexpr int64_t kGlobal = static_cast<int64_t>(TokenType::kGlobal);

// [1, 1, T, 1] bool: true at the chunk positions forced global (sequence positions 0 and N-1).
at::Tensor ForcedPositions(int64_t t, int64_t start_pos, int64_t total_len, const at::TensorOptions& opts) {
  at::Tensor forced = at::zeros({t}, opts.dtype(at::kBool));
  if (start_pos == 0) forced[0] = true;
  if (start_pos + t == total_len) forced[t - 1] = true;
  return forced.view({1, 1, t, 1});
}

// Inference types as int64 indices: argmax of the logits with the global bias; position 0 of the sequence
// global.
at::Tensor InferenceIndex(const at::Tensor& logits, double global_bias, int64_t start_pos) {
  torch::NoGradGuard no_grad;
  at::Tensor bias = at::zeros({kNumTokenTypes}, logits.options());
  bias[kGlobal] = global_bias;  // docs/method.md 2: guards near-ties against precision flips
  at::Tensor index = (logits.detach() + bias).argmax(-1);
  if (start_pos == 0) index.select(-1, 0).fill_(kGlobal);  // attention sink
  return index;
}

}  // namespace

ScorerImpl::ScorerImpl(int64_t d_model, int64_t n_kv_head) : n_kv_head_(n_kv_head) {
  TORCH_CHECK(d_model > 0 && n_kv_head > 0, "scorer needs d_model > 0 and n_kv_head > 0, got ", d_model, ", ",
              n_kv_head);
  proj_ = register_module(
      "proj", torch::nn::Linear(torch::nn::LinearOptions(d_model, n_kv_head * kNumTokenTypes).bias(false)));
  torch::NoGradGuard no_grad;
  proj_->weight.normal_(0.0, 0.02);  // docs/method.md 2: init N(0, 0.02)
}

ScorerOutput ScorerImpl::Forward(const at::Tensor& x_normed, bool training, double tau, double global_bias,
                                 int64_t start_pos, int64_t total_len, const NoiseKey* noise, int64_t layer) {
  TORCH_CHECK(x_normed.dim() == 3, "scorer input must be [B, T, d_model], got ", x_normed.sizes());
  TORCH_CHECK(tau > 0.0, "Gumbel temperature tau must be > 0, got ", tau);
  const int64_t b = x_normed.size(0);
  const int64_t t = x_normed.size(1);
  TORCH_CHECK(t >= 1, "scorer input has no positions");
  if (total_len == 0) total_len = start_pos + t;
  TORCH_CHECK(start_pos >= 0 && start_pos + t <= total_len, "scorer chunk [", start_pos, ", ", start_pos + t,
              ") lies outside a sequence of ", total_len, " positions");

  ScorerOutput result;
  // docs/method.md 2: the scorer sends no gradient into its input.
  at::Tensor flat = proj_->forward(x_normed.detach());  // [B, T, H_kv * 3]
  result.logits = flat.view({b, t, n_kv_head_, kNumTokenTypes}).permute({0, 2, 1, 3}).contiguous();

  at::Tensor global_onehot = at::zeros({kNumTokenTypes}, result.logits.options());
  global_onehot[kGlobal] = 1.0;

  if (training) {
    // Gumbel(0, 1) = -log(Exp(1)); the clamp keeps a (vanishingly rare) exact 0 from producing inf.
    at::Tensor gumbel;
    {
      torch::NoGradGuard no_grad;
      if (noise != nullptr) {
        gumbel = CounterGumbel(*noise, layer, b, n_kv_head_, start_pos, t, result.logits.scalar_type())
                     .to(result.logits.device());
      } else {
        // Drawn for all N positions, then cut: a chunk of a sequence-parallel run gets the single-rank noise.
        at::Tensor whole = at::empty({b, n_kv_head_, total_len, kNumTokenTypes}, result.logits.options());
        gumbel = -whole.exponential_().narrow(2, start_pos, t).clamp_min(1e-30).log();
      }
    }
    at::Tensor soft = at::softmax((result.logits + gumbel) / tau, -1);
    at::Tensor index = soft.argmax(-1);
    at::Tensor hard = at::one_hot(index, kNumTokenTypes).to(soft.scalar_type());
    // Straight-through: `soft - soft.detach()` is exactly 0 in the forward, so the value is exactly one-hot
    // (hard - soft + soft would round), while the gradient is that of `soft`.
    at::Tensor onehot = hard + (soft - soft.detach());
    // docs/method.md 2: positions 0 and N-1 forced global; `where` gives them zero gradient.
    at::Tensor forced = ForcedPositions(t, start_pos, total_len, result.logits.options());
    result.onehot = at::where(forced, global_onehot, onehot);
    result.types = at::where(forced.squeeze(-1), at::zeros({}, index.options()), index).to(at::kChar);
    result.soft = soft.detach();
    result.inference_types = InferenceIndex(result.logits, global_bias, start_pos).to(at::kChar);
    return result;
  }

  torch::NoGradGuard no_grad;
  at::Tensor index = InferenceIndex(result.logits, global_bias, start_pos);
  result.types = index.to(at::kChar);
  result.inference_types = result.types;
  result.onehot = at::one_hot(index, kNumTokenTypes).to(result.logits.scalar_type());
  return result;
}

}  // namespace nats
