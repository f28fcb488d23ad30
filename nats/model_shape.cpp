#include "nats/model_shape.h"

namespace nats {

int ResolvedKvHeads(const config::ModelConfig& m) { return m.n_kv_head() > 0 ? m.n_kv_head() : m.n_head(); }

int ResolvedFfnWidth(const config::ModelConfig& m) {
  if (m.d_ff() > 0) return m.d_ff();
  if (m.mlp() == config::ModelConfig::SWIGLU) return (8 * m.d_model() / 3 + 63) / 64 * 64;
  return 4 * m.d_model();
}

bool IsScorerParameter(const std::string& name) { return name.find("scorer") != std::string::npos; }

int MaxLearnedPositions(const config::ModelConfig& m) {
  return m.max_position_embeddings() > 0 ? m.max_position_embeddings() : m.context_length();
}

}  // namespace nats
