// scaling/flop_count.h against the model itself: the parameter counts equal Transformer::NumParameters() and
// the embedding share equals the vocabulary matrices' numel, for GPT-2-style and Llama-style (RMSNorm,
// SwiGLU, GQA, untied head) shapes with dense and NAtS layers; the FLOPs formula is checked by hand for one
// shape.
#include "scaling/flop_count.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "nats/transformer.h"
#include "runtime/config.h"
#include "runtime/inference_model.h"

namespace nats::scaling {
namespace {

config::Config Shape(bool llama_style, bool use_nats) {
  config::Config config;
  auto* m = config.mutable_model();
  m->set_vocab_size(320);
  m->set_n_layer(3);
  m->set_n_head(4);
  m->set_d_model(64);
  m->set_context_length(32);
  if (llama_style) {
    m->set_norm(config::ModelConfig::RMS_NORM);
    m->set_mlp(config::ModelConfig::SWIGLU);
    m->set_n_kv_head(2);
    m->set_tie_embeddings(false);
  }
  if (use_nats) {
    m->set_attention(config::ModelConfig::NATS);
    config.mutable_nats()->add_layers(0);
    config.mutable_nats()->add_layers(2);
  }
  return config;
}

class CountsMatchModel : public ::testing::TestWithParam<std::tuple<bool, bool>> {};

TEST_P(CountsMatchModel, TotalAndEmbeddingEqualTheBuiltModel) {
  const auto [llama_style, use_nats] = GetParam();
  const config::Config config = Shape(llama_style, use_nats);
  Transformer model(ModelSpecFromConfig(config));
  const ParameterCounts counts = CountParameters(config);
  EXPECT_EQ(counts.total, model->NumParameters());
  int64_t embedding = 0;
  for (const auto& p : model->named_parameters()) {
    if (p.key() == "wte.weight" || p.key() == "lm_head.weight") embedding += p.value().numel();
  }
  EXPECT_EQ(counts.embedding, embedding);
  EXPECT_EQ(counts.non_embedding, counts.total - counts.embedding);
}

INSTANTIATE_TEST_SUITE_P(Shapes, CountsMatchModel, ::testing::Combine(::testing::Bool(), ::testing::Bool()));

// The Hugging Face families' extras (interop/): GPT-2's biases and learned positions, Qwen2's q/k/v biases.
TEST(CountsMatchModel, BiasesAndLearnedPositions) {
  for (int variant = 0; variant < 2; ++variant) {
    config::Config config = Shape(/*llama_style=*/variant == 1, /*use_nats=*/true);
    config::ModelConfig* m = config.mutable_model();
    if (variant == 0) {
      m->set_position(config::ModelConfig::LEARNED);
      m->set_max_position_embeddings(48);
      m->set_bias(true);
    } else {
      m->set_qkv_bias(true);
    }
    Transformer model(ModelSpecFromConfig(config));
    const ParameterCounts counts = CountParameters(config);
    EXPECT_EQ(counts.total, model->NumParameters()) << "variant " << variant;
    int64_t embedding = 0;
    for (const auto& p : model->named_parameters()) {
      if (p.key() == "wte.weight" || p.key() == "wpe.weight" || p.key() == "lm_head.weight") {
        embedding += p.value().numel();
      }
    }
    EXPECT_EQ(counts.embedding, embedding) << "variant " << variant;
  }
}

TEST(TrainingFlopsPerToken, SixNPlusTheAttentionOfTheKeptMask) {
  config::Config config = Shape(/*llama_style=*/false, /*use_nats=*/true);  // layers 0 and 2 NAtS, 1 dense
  const double six_n = 6.0 * CountParameters(config).non_embedding;
  const double per_layer_dense = 12.0 * 64 * (32 + 1) / 2.0;
  EXPECT_DOUBLE_EQ(TrainingFlopsPerToken(config, 1.0), six_n + 3 * per_layer_dense);
  EXPECT_DOUBLE_EQ(TrainingFlopsPerToken(config, 0.25), six_n + per_layer_dense * (1 + 2 * 0.25));
}

}  // namespace
}  // namespace nats::scaling
