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
  for (int layer = 0; layer < m.n_layer(); ++layer) {
    int64_t block = 2 * norm;
    block += d * (m.n_head() + 2 * n_kv) * head_dim;  // fused QKV
    block += d * d;                                   // output projection
    block += (m.mlp() == config::ModelConfig::SWIGLU ? 3 : 2) * d * ffn;
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
