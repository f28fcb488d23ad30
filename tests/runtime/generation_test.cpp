// Tests of sampling and cached generation (runtime/generation.h): a fixed seed gives the same tokens; greedy
// generation continues with the argmax of the full forward at every step (so the cache is used correctly
// while generating); top-k = 1 and a tiny top-p are greedy; sampling frequencies follow the softmax; user
// errors name the flag.
#include "runtime/generation.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>

namespace nats {
namespace {

Transformer SmallModel(bool nats) {
  ModelSpec spec;
  spec.model.set_vocab_size(53);
  spec.model.set_n_layer(2);
  spec.model.set_n_head(4);
  spec.model.set_d_model(64);
  spec.model.set_context_length(32);
  spec.model.set_attention(nats ? config::ModelConfig::NATS : config::ModelConfig::DENSE);
  spec.nats.set_window(3);
  spec.nats_layers = {nats, nats};
  torch::manual_seed(17);
  Transformer model(spec);
  torch::NoGradGuard no_grad;
  for (auto& p : model->named_parameters()) {
    if (p.key().find("scorer") != std::string::npos) p.value().normal_(0.0, 0.5);
  }
  return model;
}

std::vector<int64_t> Prompt() { return {3, 14, 15, 9, 26, 5}; }

TEST(Generation, FixedSeedIsDeterministic) {
  Transformer model = SmallModel(/*nats=*/true);
  GenerationOptions opt;
  opt.max_tokens = 20;
  opt.sampling = {/*temperature=*/1.0, /*top_k=*/10, /*top_p=*/0.9, /*seed=*/42};
  auto a = Generate(model, Prompt(), opt);
  auto b = Generate(model, Prompt(), opt);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(a->tokens, b->tokens);
  EXPECT_EQ(a->tokens.size(), 20u);
  EXPECT_EQ(a->decode_steps, 19);
  EXPECT_EQ(a->cache.tokens, static_cast<int64_t>(Prompt().size()) + 19);
  bool any_different = false;
  for (uint64_t seed = 1; seed < 6 && !any_different; ++seed) {
    opt.sampling.seed = seed;
    any_different = Generate(model, Prompt(), opt)->tokens != a->tokens;
  }
  EXPECT_TRUE(any_different) << "different seeds should give different samples";
}

TEST(Generation, GreedyFollowsTheFullForward) {
  for (bool nats : {false, true}) {
    Transformer model = SmallModel(nats);
    model->eval();
    GenerationOptions opt;
    opt.max_tokens = 12;
    opt.sampling.temperature = 0.0;
    std::vector<int64_t> streamed;
    auto r = Generate(model, Prompt(), opt, [&](int64_t id) { streamed.push_back(id); });
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(streamed, r->tokens);
    std::vector<int64_t> seq = Prompt();
    for (int64_t id : r->tokens) {
      torch::NoGradGuard no_grad;
      at::Tensor logits = model->forward(torch::tensor(seq, torch::kLong).view({1, -1}));
      EXPECT_EQ(logits[0][-1].argmax().item<int64_t>(), id)
          << "nats " << nats << " at position " << seq.size();
      seq.push_back(id);
    }
    // top_k = 1 and a tiny top_p are greedy whatever the temperature and seed.
    opt.sampling = {/*temperature=*/2.0, /*top_k=*/1, /*top_p=*/1.0, /*seed=*/7};
    EXPECT_EQ(Generate(model, Prompt(), opt)->tokens, r->tokens);
    opt.sampling = {/*temperature=*/1.0, /*top_k=*/0, /*top_p=*/1e-9, /*seed=*/8};
    EXPECT_EQ(Generate(model, Prompt(), opt)->tokens, r->tokens);
  }
}

TEST(Generation, StopTokenEndsGeneration) {
  Transformer model = SmallModel(/*nats=*/true);
  GenerationOptions opt;
  opt.max_tokens = 12;
  opt.sampling.temperature = 0.0;
  auto full = Generate(model, Prompt(), opt);
  ASSERT_TRUE(full.ok());
  opt.stop_token = full->tokens[3];
  auto stopped = Generate(model, Prompt(), opt);
  ASSERT_TRUE(stopped.ok());
  const auto first = std::find(full->tokens.begin(), full->tokens.end(), opt.stop_token);
  EXPECT_EQ(stopped->tokens, std::vector<int64_t>(full->tokens.begin(), first + 1));
}

TEST(Sampler, FrequenciesFollowTheSoftmax) {
  Sampler sampler({/*temperature=*/1.0, 0, 1.0, /*seed=*/3});
  at::Tensor logits = torch::tensor({0.0, std::log(3.0), -1e9});
  int ones = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    const int64_t id = sampler.Sample(logits);
    ASSERT_NE(id, 2);
    ones += id == 1;
  }
  EXPECT_NEAR(static_cast<double>(ones) / n, 0.75, 0.015);
  // top_p = 0.7 keeps only the 0.75 token.
  Sampler nucleus({1.0, 0, 0.7, 4});
  for (int i = 0; i < 100; ++i) EXPECT_EQ(nucleus.Sample(logits), 1);
}

TEST(Generation, BadInputsNameTheFlag) {
  Transformer model = SmallModel(/*nats=*/true);
  GenerationOptions opt;
  auto message = [&](const std::vector<int64_t>& prompt) {
    auto r = Generate(model, prompt, opt);
    return r.ok() ? std::string("ok") : std::string(r.status().message());
  };
  EXPECT_NE(message({}).find("--prompt"), std::string::npos);
  opt.max_positions = 10;
  opt.max_tokens = 5;
  EXPECT_NE(message(Prompt()).find("--max_context"), std::string::npos);
  opt.max_positions = 0;
  opt.sampling.temperature = -1;
  EXPECT_NE(message(Prompt()).find("--temperature"), std::string::npos);
  opt.sampling = {};
  opt.sampling.top_p = 0;
  EXPECT_NE(message(Prompt()).find("--top_p"), std::string::npos);
  opt.sampling = {};
  opt.policy = {CachePolicy::kStreaming, 3};
  EXPECT_NE(message(Prompt()).find("--budget"), std::string::npos);
  opt.policy = {};
  EXPECT_NE(message({1, 2, 999}).find("vocab"), std::string::npos);
  EXPECT_EQ(message(Prompt()), "ok");
}

}  // namespace
}  // namespace nats
