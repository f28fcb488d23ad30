#include "scaling/flop_count.h"

#include "nats/model_shape.h"
#include "runtime/config.h"

namespace nats::scaling {

ParameterCounts CountParameters(const config::Config& config) {
  const config::ModelConfig& m = config.model();
  const int64_t d = m.d_model();
  const int64_t n_kv = ResolvedKvHeads(m);
  const int64_t head_dim = d / m.n_head();
  const int64_t ffn = ResolvedFfnWidth(m);
  const int64_t norm = m.norm() == config::ModelConfig::RMS_NORM ? d : 2 * d;  // LayerNorm has a bias
  ParameterCounts counts;
  counts.embedding = static_cast<int64_t>(m.vocab_size()) * d * (m.tie_embeddings() ? 1 : 2);
  // Learned positions count as embedding parameters (Kaplan et al. exclude them from N as well).
  if (m.position() == config::ModelConfig::LEARNED)
    counts.embedding += static_cast<int64_t>(MaxLearnedPositions(m)) * d;
  const bool mlp_bias = m.bias();
  const bool qkv_bias = m.bias() || m.qkv_bias();
  for (int layer = 0; layer < m.n_layer(); ++layer) {
    int64_t block = 2 * norm;
    block += (d + (qkv_bias ? 1 : 0)) * (m.n_head() + 2 * n_kv) * head_dim;     // fused QKV
    block += (d + (mlp_bias ? 1 : 0)) * d;                                      // output projection
    const int64_t ffn_inputs = m.mlp() == config::ModelConfig::SWIGLU ? 2 : 1;  // (gate and) fc
    block += ffn_inputs * (d + (mlp_bias ? 1 : 0)) * ffn + (ffn + (mlp_bias ? 1 : 0)) * d;
    if (LayerUsesNats(config, layer)) block += d * n_kv * 3;  // scorer: 3 type logits per KV head
    counts.non_embedding += block;
  }
  counts.non_embedding += norm;  // final norm
  counts.total = counts.embedding + counts.non_embedding;
  return counts;
}

double TrainingFlopsPerToken(const config::Config& config, double nats_density) {
  const config::ModelConfig& m = config.model();
  const double mean_causal_keys = (m.context_length() + 1) / 2.0;
  double attention = 0;
  for (int layer = 0; layer < m.n_layer(); ++layer) {
    const double density = LayerUsesNats(config, layer) ? nats_density : 1.0;
    attention += 12.0 * m.d_model() * density * mean_causal_keys;
  }
  return 6.0 * static_cast<double>(CountParameters(config).non_embedding) + attention;
}

}  // namespace nats::scaling
