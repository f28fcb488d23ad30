// Counter-based Gumbel noise (nats/gumbel_noise.h): the same values however a batch is split (rows by sample
// index, positions by chunk), different values for different seeds, layers, samples, heads and positions, and
// the Gumbel(0, 1) distribution (mean = Euler-Mascheroni constant, variance = pi^2 / 6, CDF exp(-exp(-x))).
#include "nats/gumbel_noise.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "nats/scorer.h"

namespace nats {
namespace {

TEST(GumbelNoise, IndependentOfHowTheBatchIsSplit) {
  const NoiseKey key{42, 100};
  at::Tensor whole = CounterGumbel(key, 3, 4, 2, 0, 50, at::kDouble);
  // Rows 2..3 as their own batch starting at sample 102; positions 20..49 as a chunk.
  at::Tensor rows = CounterGumbel({42, 102}, 3, 2, 2, 0, 50, at::kDouble);
  EXPECT_TRUE(at::equal(rows, whole.narrow(0, 2, 2)));
  at::Tensor chunk = CounterGumbel(key, 3, 4, 2, 20, 30, at::kDouble);
  EXPECT_TRUE(at::equal(chunk, whole.narrow(2, 20, 30)));
  // Float is the double value rounded.
  EXPECT_TRUE(at::equal(CounterGumbel(key, 3, 4, 2, 0, 50, at::kFloat), whole.to(at::kFloat)));
}

TEST(GumbelNoise, EveryCoordinateChangesTheValues) {
  at::Tensor base = CounterGumbel({1, 0}, 0, 1, 1, 0, 64, at::kDouble);
  EXPECT_FALSE(at::equal(base, CounterGumbel({2, 0}, 0, 1, 1, 0, 64, at::kDouble))) << "seed";
  EXPECT_FALSE(at::equal(base, CounterGumbel({1, 0}, 1, 1, 1, 0, 64, at::kDouble))) << "layer";
  EXPECT_FALSE(at::equal(base, CounterGumbel({1, 1}, 0, 1, 1, 0, 64, at::kDouble))) << "sample";
  at::Tensor two_heads = CounterGumbel({1, 0}, 0, 1, 2, 0, 64, at::kDouble);
  EXPECT_FALSE(at::equal(two_heads.select(1, 0), two_heads.select(1, 1))) << "head";
  EXPECT_FALSE(at::equal(base.narrow(2, 0, 32), base.narrow(2, 32, 32))) << "position";
}

TEST(GumbelNoise, HasTheGumbelDistribution) {
  at::Tensor x = CounterGumbel({7, 0}, 0, 8, 8, 0, 4096, at::kDouble).flatten();  // 786432 values
  const double n = static_cast<double>(x.numel());
  const double mean = x.mean().item<double>(), var = x.var().item<double>();
  // Standard errors: sqrt(var / n) ~ 0.0014 for the mean; the variance's is ~ 0.006 (Gumbel kurtosis 5.4).
  EXPECT_NEAR(mean, 0.5772156649, 0.01) << "n " << n;
  EXPECT_NEAR(var, M_PI * M_PI / 6.0, 0.04);
  for (double q : {-1.0, 0.0, 1.0, 3.0}) {
    const double empirical = (x <= q).to(at::kDouble).mean().item<double>();
    EXPECT_NEAR(empirical, std::exp(-std::exp(-q)), 0.005) << "CDF at " << q;
  }
  EXPECT_TRUE(at::isfinite(x).all().item<bool>());
}

TEST(GumbelNoise, ScorerWithAKeyIsTheSameForAChunkAndTheWhole) {
  torch::manual_seed(3);
  Scorer scorer(16, 2);
  at::Tensor x = torch::randn({2, 40, 16});
  const NoiseKey key{9, 5};
  ScorerOutput whole = scorer->Forward(x, /*training=*/true, 1.0, 0.1, 0, 40, &key, 1);
  ScorerOutput tail = scorer->Forward(x.narrow(1, 25, 15), true, 1.0, 0.1, 25, 40, &key, 1);
  EXPECT_TRUE(at::equal(tail.types, whole.types.narrow(2, 25, 15)));
  EXPECT_EQ(whole.types.select(2, 39).ne(0).sum().item<int64_t>(), 0) << "position N-1 is forced global";
  // The key, not the generator, decides: reseeding the generator changes nothing.
  torch::manual_seed(1234);
  EXPECT_TRUE(at::equal(scorer->Forward(x, true, 1.0, 0.1, 0, 40, &key, 1).types, whole.types));
}

}  // namespace
}  // namespace nats
