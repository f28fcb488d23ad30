// nats/model_shape.h
//
// Model dimensions that depend on defaults in ModelConfig (runtime/config.proto): one definition used by the
// model, the config validation and the logs. LibTorch-free.
#pragma once

#include <string>

#include "runtime/config.pb.h"

namespace nats {

// Key/value heads: model.n_kv_head, or n_head when it is 0 (no GQA).
int ResolvedKvHeads(const config::ModelConfig& model);

// MLP hidden width: model.d_ff, or 4 d_model (GELU) / 8/3 d_model rounded up to 64 (SwiGLU) when it is 0.
int ResolvedFfnWidth(const config::ModelConfig& model);

// Rows of the learned position table: model.max_position_embeddings, or context_length when it is 0.
int MaxLearnedPositions(const config::ModelConfig& model);

// True for the parameters of a NAtS scorer (nats/transformer.cpp registers them as h<l>.scorer.*): the only
// ones post-training trains, and the ones an import may lack (NATS_SPEC 8).
bool IsScorerParameter(const std::string& name);

}  // namespace nats
