// Tests of the token-type scorer (docs/method.md sections 2 and 5.3): exact one-hot forward values, forced
// positions, the straight-through logits gradient vs its closed form, the biased argmax at inference, seeded
// reproducibility, and the end-to-end path scorer -> NAtS attention -> scorer weight gradient.
#include "nats/scorer.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "nats/attention.h"
#include "nats/token_type.h"

namespace nats {
namespace {

constexpr int64_t kG = static_cast<int64_t>(TokenType::kGlobal);
constexpr int64_t kL = static_cast<int64_t>(TokenType::kLocal);
constexpr int64_t kS = static_cast<int64_t>(TokenType::kSliding);

TEST(Scorer, ShapesAndInit) {
  torch::manual_seed(0);
  Scorer scorer(256, 4);
  ASSERT_EQ(scorer->parameters().size(), 1u);  // bias-free
  const at::Tensor w = scorer->proj()->weight;
  EXPECT_EQ(w.sizes(), (at::IntArrayRef{12, 256}));
  EXPECT_NEAR(w.std().item<double>(), 0.02, 0.002);
  EXPECT_NEAR(w.mean().item<double>(), 0.0, 0.002);
  ScorerOutput out = scorer->Forward(torch::randn({2, 7, 256}), /*training=*/true);
  EXPECT_EQ(out.onehot.sizes(), (at::IntArrayRef{2, 4, 7, 3}));
  EXPECT_EQ(out.types.sizes(), (at::IntArrayRef{2, 4, 7}));
  EXPECT_EQ(out.types.scalar_type(), torch::kChar);
}

TEST(Scorer, TrainingOutputIsExactlyOneHotWithForcedEnds) {
  torch::manual_seed(1);
  Scorer scorer(32, 3);
  for (int64_t t : {1, 2, 9, 40}) {
    // Large inputs spread the logits so all three options get sampled.
    ScorerOutput out = scorer->Forward(30.0 * torch::randn({4, t, 32}), true, /*tau=*/0.7);
    const at::Tensor y = out.onehot.detach();
    EXPECT_TRUE(torch::logical_or(y.eq(0), y.eq(1)).all().item<bool>());
    EXPECT_TRUE(y.sum(-1).eq(1).all().item<bool>());
    EXPECT_TRUE(torch::equal(y.argmax(-1).to(torch::kChar), out.types));
    EXPECT_TRUE(out.types.select(-1, 0).eq(kG).all().item<bool>());
    EXPECT_TRUE(out.types.select(-1, t - 1).eq(kG).all().item<bool>());
    if (t == 40) {
      for (int64_t type : {kG, kL, kS}) EXPECT_TRUE(out.types.eq(type).any().item<bool>()) << "type " << type;
      // Away from the forced ends the sample is the argmax of the perturbed softmax.
      EXPECT_TRUE(torch::equal(out.soft.argmax(-1).narrow(-1, 1, t - 2),
                               out.types.narrow(-1, 1, t - 2).to(torch::kLong)));
    }
  }
}

// docs/method.md 5.3: dL/dlogit_o = ysoft_o (dL/dy_o - sum_o' ysoft_o' dL/dy_o') / tau; zero at forced
// positions; no gradient into the scorer input.
TEST(Scorer, StraightThroughGradientMatchesFormula) {
  for (double tau : {1.0, 0.5, 2.0}) {
    torch::manual_seed(2);
    Scorer scorer(16, 2);
    scorer->to(torch::kDouble);
    at::Tensor x = torch::randn({3, 11, 16}, torch::kDouble).requires_grad_(true);
    ScorerOutput out = scorer->Forward(x, true, tau);
    const at::Tensor dy = torch::randn_like(out.onehot);
    const at::Tensor loss = (out.onehot * dy).sum();
    const at::Tensor dlogits = torch::autograd::grad({loss}, {out.logits}, {}, /*retain_graph=*/true)[0];
    const at::Tensor& p = out.soft;
    at::Tensor want = p * (dy - (p * dy).sum(-1, true)) / tau;
    want.select(2, 0).zero_();
    want.select(2, 10).zero_();
    EXPECT_TRUE(torch::allclose(dlogits, want, 1e-12, 1e-14)) << "tau " << tau;
    EXPECT_TRUE(dlogits.select(2, 0).eq(0).all().item<bool>());
    EXPECT_TRUE(dlogits.select(2, 10).eq(0).all().item<bool>());
    loss.backward();
    EXPECT_FALSE(x.grad().defined() && x.grad().ne(0).any().item<bool>()) << "scorer input must be detached";
    // Weight gradient = sum over (b, t) of dlogit (x) input, flat output index h * 3 + option.
    const at::Tensor flat = want.permute({0, 2, 1, 3}).reshape({3, 11, 6});
    const at::Tensor want_w = torch::einsum("bto,btd->od", {flat, x.detach()});
    EXPECT_TRUE(torch::allclose(scorer->proj()->weight.grad(), want_w, 1e-12, 1e-14));
  }
}

TEST(Scorer, InferenceIsBiasedArgmaxWithSinkAtPositionZero) {
  Scorer scorer(3, 1);
  {
    torch::NoGradGuard no_grad;
    scorer->proj()->weight.copy_(torch::eye(3));  // logits = x
  }
  const at::Tensor x = torch::tensor({{0.0, 0.0, 0.5},   // sliding, but position 0: sink
                                      {0.0, 0.05, 0.0},  // near-tie: global wins by the bias
                                      {0.0, 0.2, 0.0},   // local
                                      {0.0, 0.0, 0.3},   // sliding
                                      {0.5, 0.0, 0.0}})  // global
                           .view({1, 5, 3});
  ScorerOutput out = scorer->Forward(x, /*training=*/false, 1.0, /*global_bias=*/0.1);
  EXPECT_TRUE(torch::equal(out.types[0][0], torch::tensor({kG, kG, kL, kS, kG}, torch::kChar)));
  EXPECT_FALSE(out.soft.defined());
  EXPECT_TRUE(torch::equal(out.onehot.argmax(-1).to(torch::kChar), out.types));
  out = scorer->Forward(x, false, 1.0, /*global_bias=*/0.0);
  EXPECT_TRUE(torch::equal(out.types[0][0], torch::tensor({kG, kL, kL, kS, kG}, torch::kChar)));
  // A chunk that continues a sequence keeps its first token's own prediction.
  out = scorer->Forward(x, false, 1.0, 0.1, /*start_pos=*/5);
  EXPECT_TRUE(torch::equal(out.types[0][0], torch::tensor({kS, kG, kL, kS, kG}, torch::kChar)));
  // Inference never samples: repeated calls agree.
  EXPECT_TRUE(
      torch::equal(scorer->Forward(x, false, 1.0, 0.1).types, scorer->Forward(x, false, 1.0, 0.1).types));
}

TEST(Scorer, SeededTrainingSampleIsReproducible) {
  torch::manual_seed(3);
  Scorer scorer(8, 2);
  const at::Tensor x = torch::randn({2, 64, 8});
  torch::manual_seed(11);
  const at::Tensor a = scorer->Forward(x, true).types;
  torch::manual_seed(11);
  const at::Tensor b = scorer->Forward(x, true).types;
  const at::Tensor c = scorer->Forward(x, true).types;  // the generator moved on
  EXPECT_TRUE(torch::equal(a, b));
  EXPECT_FALSE(torch::equal(a, c));
}

// Scorer -> NAtS attention -> loss: the scorer weight gradient is the 5.3 chain: dL/dy from the attention
// backward, then the straight-through softmax.
TEST(Scorer, EndToEndGradientReachesScorerWeight) {
  torch::manual_seed(4);
  const int64_t b = 2, t = 12, d_model = 16, h = 4, h_kv = 2, d = 8;
  Scorer scorer(d_model, h_kv);
  scorer->to(torch::kDouble);
  const at::Tensor x = torch::randn({b, t, d_model}, torch::kDouble);
  ScorerOutput out = scorer->Forward(x, true);
  const at::Tensor q = torch::randn({b, h, t, d}, torch::kDouble);
  const at::Tensor k = torch::randn({b, h_kv, t, d}, torch::kDouble);
  const at::Tensor v = torch::randn({b, h_kv, t, d}, torch::kDouble);
  AttentionOptions options;
  options.window = 2;
  options.lambda = 1e-3;
  const at::Tensor loss = Attention(q, k, v, out.onehot, options).pow(2).sum();
  const at::Tensor dy = torch::autograd::grad({loss}, {out.onehot}, {}, /*retain_graph=*/true)[0];
  loss.backward();
  at::Tensor dlogit = out.soft * (dy - (out.soft * dy).sum(-1, true));
  dlogit.select(2, 0).zero_();
  dlogit.select(2, t - 1).zero_();
  const at::Tensor want =
      torch::einsum("bto,btd->od", {dlogit.permute({0, 2, 1, 3}).reshape({b, t, h_kv * 3}), x});
  const at::Tensor got = scorer->proj()->weight.grad();
  ASSERT_TRUE(got.defined());
  EXPECT_GT(got.abs().max().item<double>(), 0.0);
  EXPECT_TRUE(torch::allclose(got, want, 1e-10, 1e-12));
}

}  // namespace
}  // namespace nats
