// interop/hf_config.h
//
// Hugging Face `config.json` <-> our config (runtime/config.proto), for the model families `nats import` and
// `nats export` support (docs/interop.md):
//   gpt2  (GPT2LMHeadModel): LayerNorm, GELU (tanh), learned positions, biases everywhere, tied head;
//   llama (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM): RMSNorm, SwiGLU, RoPE with its theta and
//         scaling (linear, llama3), GQA, tied or untied head; Qwen2 adds q/k/v biases.
// Anything these cannot express (another architecture, activation, RoPE scaling, attention biases on o_proj,
// an explicit head_dim != hidden / heads) is refused with a message naming the field and what is supported.
// Our own additions travel in an extra "nats" object of config.json (attention kind, NAtS settings,
// tokenizer), which Hugging Face ignores; a model exported by us imports back to the same config.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/config.pb.h"

namespace nats::interop {

enum class HfFamily { kGpt2, kLlama };

struct HfModelConfig {
  HfFamily family = HfFamily::kLlama;
  std::string architecture;  // "GPT2LMHeadModel", "LlamaForCausalLM", ...
  // model, nats and data.tokenizer set from config.json; everything else at its default.
  config::Config config;
  // What the user should know (e.g. that no tokenizer was recorded).
  std::vector<std::string> notes;
};

// Architectures `nats import` accepts, for error messages.
std::string SupportedArchitectures();

// Parses `config_json` (the text of the file at `path`, named in errors).
absl::StatusOr<HfModelConfig> ParseHfConfig(const std::string& config_json, const std::string& path);

// The config.json text for `config` in `family`'s layout (with the "nats" extension object). Fails when the
// model uses something the family cannot express (e.g. RoPE in the gpt2 family, biases in llama).
absl::StatusOr<std::string> HfConfigJson(const config::Config& config, HfFamily family);

// The family a model of ours exports to: gpt2 for learned positions, llama for RoPE.
HfFamily FamilyOf(const config::ModelConfig& model);
const char* FamilyName(HfFamily family);

}  // namespace nats::interop
