// `nats export --checkpoint DIR --to HF_DIR`: a checkpoint in its Hugging Face family's layout (learned
// positions: GPT2LMHeadModel; RoPE: LlamaForCausalLM, or Qwen2ForCausalLM with q/k/v biases), NAtS scorers
// included as extra tensors (interop/hf_convert.h, docs/interop.md).
#include <cstdio>
#include <string>

#include "absl/strings/numbers.h"
#include "interop/hf_convert.h"
#include "launch/commands.h"
#include "launch/flag_parser.h"

namespace nats::launch {
namespace {

constexpr char kHelp[] =
    "usage: nats export --checkpoint DIR --to HF_DIR [--shard_mb N] [--overwrite]\n"
    "  --checkpoint DIR  a step directory or a run's checkpoint root (newest complete checkpoint)\n"
    "  --to HF_DIR       writes config.json and model.safetensors (float32) there; NAtS scorers are the "
    "extra\n"
    "                    tensors <layer>.nats_scorer.weight, and config.json's \"nats\" object holds the "
    "NAtS\n"
    "                    settings and tokenizer (docs/interop.md)\n"
    "  --shard_mb N      shards of at most N MB with model.safetensors.index.json (default: one file)\n"
    "  --overwrite       replace the model files already in HF_DIR\n";

}  // namespace

int RunExport(int argc, char** argv) {
  ParsedFlags flags;
  if (auto exit =
          ParseCommandFlags(argc, argv, {"checkpoint", "to", "shard_mb"}, {"overwrite"}, kHelp, &flags)) {
    return *exit;
  }
  if (!flags.Has("checkpoint") || !flags.Has("to")) {
    std::fprintf(stderr, "nats export: --checkpoint and --to are required\n%s", kHelp);
    return 2;
  }
  interop::ExportOptions options;
  options.overwrite = flags.Has("overwrite");
  if (flags.Has("shard_mb")) {
    double mb = 0;
    if (!absl::SimpleAtod(flags.Get("shard_mb"), &mb) || !(mb > 0)) {
      std::fprintf(stderr, "nats export: --shard_mb must be a positive number of megabytes, got '%s'\n",
                   flags.Get("shard_mb").c_str());
      return 2;
    }
    options.max_shard_bytes = static_cast<uint64_t>(mb * 1e6);
  }
  auto result = interop::ExportHfModel(flags.Get("checkpoint"), flags.Get("to"), options);
  if (!result.ok()) {
    std::fprintf(stderr, "nats export: %s\n", std::string(result.status().message()).c_str());
    return 1;
  }
  std::printf("exported %s (%s family): %lld tensors, %.2f MB -> %s\n", result->architecture.c_str(),
              interop::FamilyName(result->family), static_cast<long long>(result->tensors),
              result->bytes / 1e6, flags.Get("to").c_str());
  return 0;
}

}  // namespace nats::launch
