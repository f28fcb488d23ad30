// The transformer model: causality, gradients vs finite differences, and fitting one batch.
#include "nats/transformer.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace nats {
namespace {

ModelSpec TinySpec(bool nats_attention, bool rms_swiglu_gqa = false) {
  ModelSpec spec;
  auto& m = spec.model;
  m.set_vocab_size(64);
  m.set_n_layer(2);
  m.set_n_head(4);
  m.set_d_model(32);
  m.set_context_length(16);
  if (rms_swiglu_gqa) {
    m.set_norm(config::ModelConfig::RMS_NORM);
    m.set_mlp(config::ModelConfig::SWIGLU);
    m.set_n_kv_head(2);
    m.set_tie_embeddings(false);
  }
  spec.nats.set_window(3);
  spec.nats_layers = {nats_attention, nats_attention};
  return spec;
}

class TransformerVariants : public ::testing::TestWithParam<std::tuple<bool, bool>> {};

TEST_P(TransformerVariants, ChangingTokenTNeverChangesEarlierLogits) {
  auto [use_nats, llama_style] = GetParam();
  torch::manual_seed(0);
  Transformer model(TinySpec(use_nats, llama_style));
  model->eval();  // NAtS types by argmax: deterministic
  torch::NoGradGuard no_grad;
  at::Tensor tokens = torch::randint(0, 64, {2, 16}, torch::kInt64);
  at::Tensor base = model->forward(tokens);
  for (int64_t t : {0, 5, 15}) {
    at::Tensor changed = tokens.clone();
    changed.index_put_({torch::indexing::Slice(), t}, (tokens.index({torch::indexing::Slice(), t}) + 7) % 64);
    at::Tensor out = model->forward(changed);
    if (t > 0) {
      EXPECT_TRUE(torch::allclose(out.narrow(1, 0, t), base.narrow(1, 0, t), 1e-5, 1e-6)) << "t=" << t;
    }
    EXPECT_FALSE(torch::allclose(out.narrow(1, t, 1), base.narrow(1, t, 1), 1e-5, 1e-6))
        << "the changed position itself must change (else the test cannot fail), t=" << t;
  }
}

TEST_P(TransformerVariants, GradientsMatchFiniteDifferencesInDouble) {
  auto [use_nats, llama_style] = GetParam();
  torch::manual_seed(1);
  Transformer model(TinySpec(use_nats, llama_style));
  model->to(torch::kFloat64);
  // eval(): NAtS types by argmax, so the loss is a deterministic function of the weights. The hard
  // mask is piecewise constant in the scorer weights, so those are excluded from the check.
  model->eval();
  at::Tensor tokens = torch::randint(0, 64, {2, 9}, torch::kInt64);
  at::Tensor inputs = tokens.narrow(1, 0, 8), targets = tokens.narrow(1, 1, 8);
  at::Tensor loss = model->Loss(inputs, targets);
  loss.backward();
  torch::NoGradGuard no_grad;
  int checked = 0;
  for (auto& p : model->named_parameters()) {
    if (p.key().find("scorer") != std::string::npos) continue;
    at::Tensor flat = p.value().view({-1});
    at::Tensor grad = p.value().grad().view({-1});
    for (int64_t idx : {int64_t{0}, flat.numel() / 2, flat.numel() - 1}) {
      const double saved = flat[idx].item<double>();
      const double eps = 1e-6;
      flat[idx] = saved + eps;
      const double up = model->Loss(inputs, targets).item<double>();
      flat[idx] = saved - eps;
      const double down = model->Loss(inputs, targets).item<double>();
      flat[idx] = saved;
      const double numeric = (up - down) / (2 * eps);
      EXPECT_NEAR(grad[idx].item<double>(), numeric, 1e-6 + 1e-5 * std::abs(numeric))
          << p.key() << "[" << idx << "]";
      ++checked;
    }
  }
  EXPECT_GT(checked, 20);
}

INSTANTIATE_TEST_SUITE_P(DenseAndNats, TransformerVariants,
                         ::testing::Combine(::testing::Bool(), ::testing::Bool()));

TEST(Transformer, OverfitsOneBatch) {
  for (bool use_nats : {false, true}) {
    torch::manual_seed(2);
    ModelSpec spec = TinySpec(use_nats);
    spec.model.set_d_model(64);
    Transformer model(spec);
    torch::optim::AdamW opt(model->parameters(), torch::optim::AdamWOptions(1e-2).weight_decay(0.0));
    at::Tensor tokens = torch::randint(0, 64, {4, 17}, torch::kInt64);
    double last = 0;
    for (int step = 0; step < 300; ++step) {
      opt.zero_grad();
      at::Tensor loss = model->Loss(tokens.narrow(1, 0, 16), tokens.narrow(1, 1, 16));
      loss.backward();
      opt.step();
      last = loss.item<double>();
    }
    EXPECT_LT(last, 0.05) << (use_nats ? "nats" : "dense");
  }
}

TEST(Transformer, NatsWithEveryTokenGlobalEqualsDense) {
  torch::manual_seed(3);
  Transformer dense(TinySpec(false));
  torch::manual_seed(3);
  ModelSpec spec = TinySpec(true);
  spec.nats.set_global_bias(1e9);  // argmax always picks global at inference
  Transformer nats_model(spec);
  // Copy the shared weights (the NAtS model has extra scorer weights drawn from the same stream).
  torch::NoGradGuard no_grad;
  auto dense_params = dense->named_parameters();
  for (auto& p : nats_model->named_parameters()) {
    if (auto* src = dense_params.find(p.key())) p.value().copy_(*src);
  }
  dense->eval();
  nats_model->eval();
  at::Tensor tokens = torch::randint(0, 64, {2, 16}, torch::kInt64);
  EXPECT_TRUE(torch::allclose(dense->forward(tokens), nats_model->forward(tokens), 1e-5, 1e-5));
}

TEST(Transformer, InitialisationFollowsGpt2) {
  torch::manual_seed(4);
  ModelSpec spec = TinySpec(false);
  spec.model.set_d_model(256);
  spec.model.set_n_layer(8);
  spec.nats_layers.assign(8, false);
  Transformer model(spec);
  for (auto& p : model->named_parameters()) {
    const double std = p.value().std().item<double>();
    if (p.key().find("proj.weight") != std::string::npos || p.key().find("fc_out") != std::string::npos) {
      EXPECT_NEAR(std, 0.02 / std::sqrt(16.0), 0.002) << p.key();
    } else if (p.value().dim() >= 2) {
      EXPECT_NEAR(std, 0.02, 0.002) << p.key();
    }
  }
}

}  // namespace
}  // namespace nats
