// runtime/inference_model.h
//
// A trained model for inference and evaluation, loaded from a checkpoint written by `nats train`:
// the config stored in the manifest (plus optional --set overrides that must not change the model
// shape), a Transformer in eval mode with the `model/*` tensors loaded (CRC-checked), and the step.
// Works for any saved world size / ZeRO layout (resharding is a read). Single process.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nats/transformer.h"
#include "runtime/config.pb.h"

namespace nats {

// The model shape and per-layer attention choice a config describes (nats.layers via LayerUsesNats).
ModelSpec ModelSpecFromConfig(const config::Config& config);

struct InferenceModel {
  config::Config config;
  Transformer model{nullptr};
  int64_t step = 0;
  std::string step_dir;
};

// `path`: a step directory or a checkpoint root (its newest complete checkpoint; e.g. runs/tiny/ckpt).
// Errors name the path and the fix (no checkpoint yet, interrupted save, CRC failure, shape mismatch).
absl::StatusOr<InferenceModel> LoadModelForInference(const std::string& path,
                                                     const std::vector<std::string>& set_overrides = {});

}  // namespace nats
