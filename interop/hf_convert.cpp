#include "interop/hf_convert.h"

#include <torch/torch.h>

#include <filesystem>
#include <limits>
#include <map>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "checkpoints/checkpoint_dir.h"
#include "checkpoints/durable_file.h"
#include "interop/hf_weights.h"
#include "interop/safetensors.h"
#include "nats/model_shape.h"
#include "parallel/local_communicator.h"
#include "runtime/checkpointing.h"
#include "runtime/config.h"
#include "runtime/inference_model.h"

namespace nats::interop {
namespace fs = std::filesystem;

namespace {

// The model files of an export (what a new export replaces).
bool IsModelFile(const std::string& file) {
  return file == "config.json" || file == "model.safetensors.index.json" ||
         (absl::StartsWith(file, "model") && absl::EndsWith(file, ".safetensors"));
}

}  // namespace

absl::StatusOr<ImportResult> ImportHfModel(const std::string& hf_dir, const std::string& out_root,
                                           const ImportOptions& options) {
  std::error_code ec;
  if (!fs::is_directory(hf_dir, ec)) {
    return absl::NotFoundError(absl::StrCat(hf_dir,
                                            ": not a directory (give the folder holding config.json and "
                                            "model.safetensors)"));
  }
  const std::string config_path = (fs::path(hf_dir) / "config.json").string();
  auto config_text = checkpoint::ReadFileToString(config_path);
  if (!config_text.ok()) return config_text.status();
  auto hf = ParseHfConfig(*config_text, config_path);
  if (!hf.ok()) return hf.status();
  ImportResult result;
  result.hf = *hf;

  // The file's tensors are mapped with the config it describes; the overrides (e.g. model.attention=NATS on a
  // dense model) then only add parameters, which keep their initialisation.
  auto weights = SafetensorsCheckpoint::Open(hf_dir);
  if (!weights.ok()) return weights.status();
  auto imported = ImportWeights(hf->config, hf->family, **weights);
  if (!imported.ok()) return imported.status();

  config::Config cfg = hf->config;
  for (const std::string& assignment : options.set_overrides) {
    if (absl::Status s = ApplyOverride(assignment, &cfg); !s.ok()) return s;
  }
  if (absl::Status s = ValidateConfig(cfg); !s.ok()) return s;
  result.hf.config = cfg;

  torch::manual_seed(cfg.train().seed());
  Transformer model(ModelSpecFromConfig(cfg));
  std::map<std::string, at::Tensor> params;
  for (const auto& p : model->named_parameters()) params[p.key()] = p.value();
  std::set<std::string> filled;
  {
    torch::NoGradGuard no_grad;
    for (const auto& [name, tensor] : *imported) {
      auto it = params.find(name);
      if (it == params.end()) {
        if (IsScorerParameter(name)) continue;  // a NAtS export imported with model.attention=DENSE
        return absl::InvalidArgumentError(absl::StrCat(
            "--set changed the model's shape (", DescribeModelConfigChange(hf->config, cfg), "): tensor ",
            name, " of ", hf_dir,
            " has no parameter left; only model.context_length, model.attention, nats.* and data.* "
            "may change on import"));
      }
      if (it->second.sizes() != tensor.sizes()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--set changed the model's shape (", DescribeModelConfigChange(hf->config, cfg), "): parameter ",
            name, " is ", c10::str(tensor.sizes()), " in ", hf_dir, " but ", c10::str(it->second.sizes()),
            " in the model; only model.context_length, model.attention, nats.* and data.* may change on "
            "import"));
      }
      it->second.copy_(tensor);
      filled.insert(name);
    }
  }
  for (const auto& [name, tensor] : params) {
    result.parameters += tensor.numel();
    if (filled.count(name)) continue;
    if (!IsScorerParameter(name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--set changed the model's shape (", DescribeModelConfigChange(hf->config, cfg),
                       "): parameter ", name, " is not in ", hf_dir,
                       "; only model.context_length, model.attention, nats.* and data.* may change on "
                       "import"));
    }
    ++result.scorers_initialised;
  }
  result.tensors = static_cast<int64_t>(filled.size());

  if (checkpoint::ResolveCheckpointPath(out_root).ok()) {
    if (!options.overwrite) {
      return absl::AlreadyExistsError(
          absl::StrCat(out_root, " already holds a checkpoint; choose another --out or pass --overwrite"));
    }
    if (absl::Status s = checkpoint::RemoveTree(out_root); !s.ok()) return s;
  }
  std::vector<StateTensor> state;
  for (const auto& [name, tensor] : params) state.push_back(WholeTensor("model/" + name, tensor));
  checkpoint::Manifest header;
  *header.mutable_config() = cfg;
  header.set_consumed_samples(0);
  parallel::LocalCommunicator local;
  auto saved = SaveCheckpoint(local, out_root, /*step=*/0, state, header, CaptureCpuRngState(),
                              checkpoint::RetentionPolicy{});
  if (!saved.ok()) return saved.status();
  result.step_dir = saved->step_dir;
  return result;
}

absl::StatusOr<ExportResult> ExportHfModel(const std::string& checkpoint_path, const std::string& hf_dir,
                                           const ExportOptions& options) {
  auto loaded = LoadModelForInference(checkpoint_path);
  if (!loaded.ok()) return loaded.status();
  const config::Config& cfg = loaded->config;
  ExportResult result;
  result.family = FamilyOf(cfg.model());
  auto config_json = HfConfigJson(cfg, result.family);
  if (!config_json.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(checkpoint_path, ": cannot export to the ",
                                                   FamilyName(result.family),
                                                   " layout: ", config_json.status().message()));
  }
  NamedTensors ours;
  for (const auto& p : loaded->model->named_parameters()) ours.emplace_back(p.key(), p.value().detach());
  auto hf_tensors = ExportWeights(cfg, result.family, ours);
  if (!hf_tensors.ok()) return hf_tensors.status();

  std::error_code ec;
  fs::create_directories(hf_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", hf_dir, ": ", ec.message()));
  std::vector<fs::path> existing;
  for (const auto& entry : fs::directory_iterator(hf_dir, ec)) {
    if (IsModelFile(entry.path().filename().string())) existing.push_back(entry.path());
  }
  if (!existing.empty()) {
    if (!options.overwrite) {
      return absl::AlreadyExistsError(absl::StrCat(hf_dir, " already holds a model (", existing[0].string(),
                                                   "); choose another --to or pass --overwrite"));
    }
    // Stale shards of an earlier export would otherwise be read through a stale index.
    for (const fs::path& p : existing) fs::remove(p, ec);
  }
  const uint64_t shard =
      options.max_shard_bytes > 0 ? options.max_shard_bytes : std::numeric_limits<uint64_t>::max();
  if (absl::Status s = WriteSafetensorsCheckpoint(hf_dir, *hf_tensors, {{"format", "pt"}}, shard); !s.ok())
    return s;
  if (absl::Status s = checkpoint::WriteFileDurably((fs::path(hf_dir) / "config.json").string(), *config_json,
                                                    "hf_config");
      !s.ok()) {
    return s;
  }
  result.architecture = result.family == HfFamily::kGpt2 ? "GPT2LMHeadModel"
                        : cfg.model().qkv_bias()         ? "Qwen2ForCausalLM"
                                                         : "LlamaForCausalLM";
  result.tensors = static_cast<int64_t>(hf_tensors->size());
  for (const auto& [name, t] : *hf_tensors) result.bytes += t.numel() * t.element_size();
  return result;
}

}  // namespace nats::interop
