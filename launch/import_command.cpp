// `nats import --from HF_DIR --out CKPT_DIR`: a Hugging Face GPT-2 / Llama-family model (config.json +
// safetensors, single or sharded) as one of our checkpoints at step 0 (interop/hf_convert.h,
// docs/interop.md).
#include <cstdio>
#include <string>

#include "absl/strings/str_format.h"
#include "interop/hf_convert.h"
#include "launch/commands.h"
#include "launch/flag_parser.h"

namespace nats::launch {
namespace {

constexpr char kHelp[] =
    "usage: nats import --from HF_DIR --out CKPT_DIR [--set section.field=value ...] [--overwrite]\n"
    "  --from HF_DIR   a Hugging Face model folder: config.json and model.safetensors, or "
    "model-*.safetensors\n"
    "                  shards with model.safetensors.index.json. Architectures: GPT2LMHeadModel,\n"
    "                  LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM\n"
    "  --out CKPT_DIR  the checkpoint root to write (step_00000000 inside); nats eval / generate / inspect "
    "/\n"
    "                  export read it, and train.init_from starts post-training from it\n"
    "  --set A=B       change the imported config without changing a tensor's shape, e.g.\n"
    "                  --set model.context_length=512 --set model.attention=NATS (scorers start fresh)\n"
    "  --overwrite     replace a checkpoint already in CKPT_DIR\n";

}  // namespace

int RunImport(int argc, char** argv) {
  ParsedFlags flags;
  if (auto exit = ParseCommandFlags(argc, argv, {"from", "out", "set"}, {"overwrite"}, kHelp, &flags))
    return *exit;
  if (!flags.Has("from") || !flags.Has("out")) {
    std::fprintf(stderr, "nats import: --from and --out are required\n%s", kHelp);
    return 2;
  }
  interop::ImportOptions options;
  if (flags.values.count("set")) options.set_overrides = flags.values.at("set");
  options.overwrite = flags.Has("overwrite");
  auto result = interop::ImportHfModel(flags.Get("from"), flags.Get("out"), options);
  if (!result.ok()) {
    std::fprintf(stderr, "nats import: %s\n", std::string(result.status().message()).c_str());
    return 1;
  }
  const auto& m = result->hf.config.model();
  std::printf("imported %s (%s family): %d layers, d %d, %d heads (%d kv), vocab %d, %s parameters\n",
              result->hf.architecture.c_str(), interop::FamilyName(result->hf.family), m.n_layer(),
              m.d_model(), m.n_head(), m.n_kv_head() > 0 ? m.n_kv_head() : m.n_head(), m.vocab_size(),
              absl::StrFormat("%.2fM", result->parameters / 1e6).c_str());
  std::printf("  %lld tensors from %s", static_cast<long long>(result->tensors), flags.Get("from").c_str());
  if (result->scorers_initialised > 0) {
    std::printf(", %lld NAtS scorers initialised fresh", static_cast<long long>(result->scorers_initialised));
  }
  std::printf("\n");
  for (const std::string& note : result->hf.notes) std::printf("  note: %s\n", note.c_str());
  std::printf("checkpoint -> %s\n", result->step_dir.c_str());
  return 0;
}

}  // namespace nats::launch
