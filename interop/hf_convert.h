// interop/hf_convert.h
//
// `nats import` and `nats export` (docs/interop.md): a Hugging Face model directory (config.json plus
// model.safetensors or sharded model-*.safetensors with model.safetensors.index.json) to one of our
// checkpoints, and back. An imported model is a normal checkpoint at step 0 (nats eval / generate / inspect /
// export read it; `train.init_from` starts post-training from it). Weights become float32.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "interop/hf_config.h"
#include "runtime/config.pb.h"

namespace nats::interop {

struct ImportOptions {
  // `--set section.field=value` applied to the imported config before the model is built; must not change
  // the shape of any imported tensor (model.context_length, model.attention=NATS and nats.* may change).
  std::vector<std::string> set_overrides;
  bool overwrite = false;  // replace a checkpoint root that already holds checkpoints
};

struct ImportResult {
  HfModelConfig hf;
  std::string step_dir;
  int64_t parameters = 0;
  int64_t tensors = 0;
  int64_t scorers_initialised = 0;  // NAtS scorers the file lacked (model.attention=NATS on a dense model)
};

// Reads hf_dir and writes checkpoint root `out_root` (step 0).
absl::StatusOr<ImportResult> ImportHfModel(const std::string& hf_dir, const std::string& out_root,
                                           const ImportOptions& options = {});

struct ExportOptions {
  // Shards of at most this many bytes (then model.safetensors.index.json); 0: one model.safetensors.
  uint64_t max_shard_bytes = 0;
  bool overwrite = false;  // replace model files already in the directory
};

struct ExportResult {
  HfFamily family = HfFamily::kLlama;
  std::string architecture;
  int64_t tensors = 0;
  uint64_t bytes = 0;
};

// Writes the checkpoint at `checkpoint_path` (a step directory or root) to hf_dir in its family's layout.
absl::StatusOr<ExportResult> ExportHfModel(const std::string& checkpoint_path, const std::string& hf_dir,
                                           const ExportOptions& options = {});

}  // namespace nats::interop
