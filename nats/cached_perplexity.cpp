// Perplexity by full forward and by cached decode (nats/cached_perplexity.h).
#include "nats/cached_perplexity.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

namespace nats {
namespace {

void CheckTokens(const at::Tensor& tokens) {
  TORCH_CHECK(tokens.dim() == 2 && tokens.size(1) >= 2, "perplexity needs tokens [B, T] with T >= 2, got ",
              tokens.sizes());
}

// Restores the training flag on scope exit (evaluation must not leave a training run in eval mode).
class EvalModeScope {
 public:
  explicit EvalModeScope(Transformer& model) : model_(model), was_training_(model->is_training()) {
    model_->eval();
  }
  ~EvalModeScope() { model_->train(was_training_); }

 private:
  Transformer& model_;
  bool was_training_;
};

// Sum of cross-entropy of logits [B, n, V] against targets [B, n].
double SumCrossEntropy(const at::Tensor& logits, const at::Tensor& targets) {
  return at::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}).to(at::kDouble), targets.reshape({-1}),
                                /*weight=*/{}, at::Reduction::Sum)
      .item<double>();
}

}  // namespace

PerplexityResult PerplexityByForward(Transformer& model, const at::Tensor& tokens) {
  CheckTokens(tokens);
  EvalModeScope eval(model);
  torch::NoGradGuard no_grad;
  const int64_t t = tokens.size(1);
  at::Tensor logits = model->forward(tokens.narrow(1, 0, t - 1));
  PerplexityResult r;
  r.predicted = tokens.size(0) * (t - 1);
  r.loss = SumCrossEntropy(logits, tokens.narrow(1, 1, t - 1)) / static_cast<double>(r.predicted);
  r.perplexity = std::exp(r.loss);
  for (const LayerStats& st : model->LastLayerStats()) r.layer_kv_fraction.push_back(st.kv_fraction);
  for (double f : r.layer_kv_fraction) r.kv_fraction += f / static_cast<double>(r.layer_kv_fraction.size());
  return r;
}

PerplexityResult PerplexityByDecode(Transformer& model, const at::Tensor& tokens,
                                    const CachePolicyConfig& policy, int64_t prefill) {
  CheckTokens(tokens);
  const int64_t t = tokens.size(1);
  TORCH_CHECK(prefill >= 1 && prefill < t, "prefill length must be in [1, ", t - 1, "], got ", prefill);
  EvalModeScope eval(model);
  torch::NoGradGuard no_grad;
  auto cache = model->NewCache(policy, tokens.size(0));
  const int layers = cache->num_layers();
  std::vector<double> kv_sum(layers, 0.0);
  double reference_sum = 0.0, entries_sum = 0.0;
  int64_t steps = 0;
  auto record = [&]() {
    const std::vector<LayerCacheStats> stats = cache->Stats();
    for (int l = 0; l < layers; ++l) {
      const double n = static_cast<double>(stats[l].tokens);
      const double retained = stats[l].kv_retained.to(at::kDouble).mean().item<double>();
      kv_sum[l] += retained / n;
      entries_sum += retained / layers;
      reference_sum += stats[l].reference_count.to(at::kDouble).mean().item<double>() / n / layers;
    }
    ++steps;
  };

  PerplexityResult r;
  r.predicted = tokens.size(0) * (t - 1);
  double total = 0.0;
  at::Tensor logits = model->Prefill(tokens.narrow(1, 0, prefill), *cache, /*all_logits=*/true);
  total += SumCrossEntropy(logits, tokens.narrow(1, 1, prefill));
  record();
  for (int64_t i = prefill; i < t - 1; ++i) {
    logits = model->Decode(tokens.narrow(1, i, 1), *cache);  // [B, V]: predicts token i + 1
    total += SumCrossEntropy(logits.unsqueeze(1), tokens.narrow(1, i + 1, 1));
    record();
  }
  r.loss = total / static_cast<double>(r.predicted);
  r.perplexity = std::exp(r.loss);
  for (int l = 0; l < layers; ++l) r.layer_kv_fraction.push_back(kv_sum[l] / steps);
  for (double f : r.layer_kv_fraction) r.kv_fraction += f / layers;
  r.reference_kv_fraction = reference_sum / steps;
  r.kv_entries = entries_sum / steps;
  const CacheSummary summary = cache->Summary();
  r.peak_cache_bytes = summary.peak_bytes;
  r.dense_cache_bytes = summary.dense_bytes;
  return r;
}

int64_t BudgetForMeanEntries(double mean_entries, int64_t t, int64_t prefill) {
  TORCH_CHECK(prefill >= 1 && prefill < t, "prefill length must be in [1, ", t - 1, "], got ", prefill);
  int64_t best = 1;
  double best_error = INFINITY;
  for (int64_t budget = 1; budget < t;
       ++budget) {  // t <= context length + 1: a scan is cheap and obviously right
    double sum = 0;
    for (int64_t n = prefill; n < t; ++n) sum += static_cast<double>(std::min(n, budget));
    const double error = std::abs(sum / static_cast<double>(t - prefill) - mean_entries);
    if (error < best_error) best = budget, best_error = error;
  }
  return best;
}

}  // namespace nats
