#include "runtime/inference_model.h"

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "checkpoints/checkpoint_dir.h"
#include "parallel/local_communicator.h"
#include "runtime/checkpointing.h"
#include "runtime/config.h"

namespace nats {

ModelSpec ModelSpecFromConfig(const config::Config& cfg) {
  ModelSpec spec;
  spec.model = cfg.model();
  spec.nats = cfg.nats();
  for (int l = 0; l < cfg.model().n_layer(); ++l) spec.nats_layers.push_back(LayerUsesNats(cfg, l));
  return spec;
}

absl::StatusOr<InferenceModel> LoadModelForInference(const std::string& path,
                                                     const std::vector<std::string>& set_overrides) {
  auto step_dir = checkpoint::ResolveCheckpointPath(path);
  if (!step_dir.ok()) return step_dir.status();
  auto manifest = checkpoint::ReadManifest(*step_dir);
  if (!manifest.ok()) return manifest.status();
  InferenceModel out;
  out.config = manifest->config();
  out.step = manifest->step();
  out.step_dir = *step_dir;
  for (const std::string& assignment : set_overrides) {
    if (absl::Status s = ApplyOverride(assignment, &out.config); !s.ok()) return s;
  }
  if (absl::Status s = ValidateConfig(out.config); !s.ok()) return s;
  out.model = Transformer(ModelSpecFromConfig(out.config));
  out.model->eval();

  std::vector<StateTensor> targets;
  for (const auto& p : out.model->named_parameters())
    targets.push_back(WholeTensor("model/" + p.key(), p.value()));
  parallel::LocalCommunicator local;
  LoadOptions options;
  options.current_config = &out.config;
  torch::NoGradGuard no_grad;
  auto loaded = LoadCheckpoint(local, *step_dir, targets, options);
  if (!loaded.ok()) return loaded.status();
  return out;
}

}  // namespace nats
