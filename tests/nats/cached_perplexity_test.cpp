// Tests of perplexity by forward vs by cached decode (nats/cached_perplexity.h): they agree under the `nats`
// and `dense` policies (the cache is exact), differ for a small StreamingLLM / H2O budget, and report KV
// fractions that match the budget or the NAtS rule.
#include "nats/cached_perplexity.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "nats/masks.h"

namespace nats {
namespace {

ModelSpec SmallSpec(bool nats, int64_t window) {
  ModelSpec spec;
  spec.model.set_vocab_size(61);
  spec.model.set_n_layer(2);
  spec.model.set_n_head(4);
  spec.model.set_n_kv_head(2);
  spec.model.set_d_model(64);
  spec.model.set_context_length(64);
  spec.model.set_attention(nats ? config::ModelConfig::NATS : config::ModelConfig::DENSE);
  spec.nats.set_window(static_cast<int32_t>(window));
  spec.nats_layers = {nats, nats};
  return spec;
}

Transformer MakeModel(const ModelSpec& spec) {
  torch::manual_seed(21);
  Transformer model(spec);
  model->to(torch::kDouble);
  torch::NoGradGuard no_grad;
  for (auto& p : model->named_parameters()) {
    if (p.key().find("scorer") != std::string::npos) p.value().normal_(0.0, 0.5);  // a mix of all three types
  }
  return model;
}

TEST(CachedPerplexity, NatsDecodeEqualsForward) {
  Transformer model = MakeModel(SmallSpec(/*nats=*/true, 4));
  model->train();  // the functions switch to eval mode and restore this
  torch::manual_seed(1);
  at::Tensor tokens = torch::randint(61, {2, 48}, torch::kLong);
  PerplexityResult fwd = PerplexityByForward(model, tokens);
  EXPECT_TRUE(model->is_training());
  for (int64_t prefill : {1, 10, 47}) {
    PerplexityResult dec = PerplexityByDecode(model, tokens, {}, prefill);
    EXPECT_NEAR(dec.loss, fwd.loss, 1e-9) << "prefill " << prefill;
    EXPECT_EQ(dec.predicted, fwd.predicted);
    ASSERT_EQ(dec.layer_kv_fraction.size(), 2u);
    EXPECT_GT(dec.kv_fraction, 0.0);
    EXPECT_LT(dec.kv_fraction, 1.0);
    EXPECT_GT(dec.reference_kv_fraction, 0.0);
    EXPECT_LT(dec.peak_cache_bytes, dec.dense_cache_bytes);
  }
  EXPECT_GT(fwd.perplexity, 1.0);
  EXPECT_NEAR(fwd.perplexity, std::exp(fwd.loss), 1e-9);
  EXPECT_TRUE(model->is_training());
}

TEST(CachedPerplexity, DensePolicyAndLargeBudgetsEqualDenseForward) {
  Transformer model = MakeModel(SmallSpec(/*nats=*/false, 4));
  torch::manual_seed(2);
  at::Tensor tokens = torch::randint(61, {1, 40}, torch::kLong);
  PerplexityResult fwd = PerplexityByForward(model, tokens);
  EXPECT_NEAR(PerplexityByDecode(model, tokens, {CachePolicy::kDense}).loss, fwd.loss, 1e-9);
  EXPECT_NEAR(PerplexityByDecode(model, tokens, {CachePolicy::kStreaming, 40}).loss, fwd.loss, 1e-9);
  EXPECT_NEAR(PerplexityByDecode(model, tokens, {CachePolicy::kH2O, 40}).loss, fwd.loss, 1e-9);
  PerplexityResult dense = PerplexityByDecode(model, tokens, {CachePolicy::kDense});
  EXPECT_NEAR(dense.kv_fraction, 1.0, 1e-12);
}

TEST(CachedPerplexity, SmallBudgetsChangeTheLossAndTheFraction) {
  Transformer model = MakeModel(SmallSpec(/*nats=*/false, 4));
  torch::manual_seed(3);
  const int64_t t = 60, budget = 8;
  at::Tensor tokens = torch::randint(61, {1, t}, torch::kLong);
  PerplexityResult fwd = PerplexityByForward(model, tokens);
  for (CachePolicy policy : {CachePolicy::kStreaming, CachePolicy::kH2O}) {
    PerplexityResult r = PerplexityByDecode(model, tokens, {policy, budget});
    EXPECT_GT(std::abs(r.loss - fwd.loss), 1e-6) << CachePolicyName(policy);
    // Steps i = 0..t-2 hold min(i + 1, budget) entries of i + 1.
    double expected = 0;
    for (int64_t i = 0; i < t - 1; ++i) expected += std::min<double>(i + 1, budget) / (i + 1);
    expected /= (t - 1);
    EXPECT_NEAR(r.kv_fraction, expected, 1e-12) << CachePolicyName(policy);
  }
}

// An eviction baseline at the NAtS cache size: the budget BudgetForMeanEntries picks makes StreamingLLM and
// H2O hold the NAtS cache's measured mean entries per KV head (to within one entry), for several prefill
// lengths.
TEST(CachedPerplexity, MatchedBudgetHoldsTheNatsMeanEntries) {
  Transformer model = MakeModel(SmallSpec(/*nats=*/true, 4));
  torch::manual_seed(4);
  const int64_t t = 48;
  at::Tensor tokens = torch::randint(61, {2, t}, torch::kLong);
  for (int64_t prefill : {1, 20}) {
    PerplexityResult nats = PerplexityByDecode(model, tokens, {}, prefill);
    EXPECT_GT(nats.kv_entries, 1.0);
    EXPECT_LT(nats.kv_entries, t / 2.0);
    const int64_t budget = BudgetForMeanEntries(nats.kv_entries, t, prefill);
    for (CachePolicy policy : {CachePolicy::kStreaming, CachePolicy::kH2O}) {
      PerplexityResult r = PerplexityByDecode(model, tokens, {policy, budget}, prefill);
      EXPECT_NEAR(r.kv_entries, nats.kv_entries, 1.0) << CachePolicyName(policy) << " prefill " << prefill;
    }
  }
  // By hand, t = 10, prefill 1 (n = 1..9): B = 4 holds (1 + 2 + 3 + 4 * 6) / 9 = 3.33 on average, B = 3
  // (1 + 2 + 3 * 7) / 9 = 2.67.
  EXPECT_EQ(BudgetForMeanEntries(3.3, 10, 1), 4);
  EXPECT_EQ(BudgetForMeanEntries(2.7, 10, 1), 3);
  EXPECT_EQ(BudgetForMeanEntries(1000, 10, 1), 9);
  EXPECT_EQ(BudgetForMeanEntries(0, 10, 1), 1);
}

TEST(CachedPerplexity, BadInputs) {
  Transformer model = MakeModel(SmallSpec(/*nats=*/true, 4));
  at::Tensor tokens = torch::randint(61, {1, 5}, torch::kLong);
  EXPECT_THROW(PerplexityByForward(model, tokens.narrow(1, 0, 1)), c10::Error);
  EXPECT_THROW(PerplexityByDecode(model, tokens, {}, 0), c10::Error);
  EXPECT_THROW(PerplexityByDecode(model, tokens, {}, 5), c10::Error);
}

}  // namespace
}  // namespace nats
