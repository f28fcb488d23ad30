// `nats generate`: continue a prompt with a (NAtS or dense) model through the KV cache of docs/method.md
// section 6, streaming the text, then report the cache size against a dense cache and the decode speed.
#include <torch/torch.h>

#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "data/tokenizer.h"
#include "launch/commands.h"
#include "launch/flag_parser.h"
#include "nats/kv_cache.h"
#include "nats/transformer.h"
#include "runtime/config.h"
#include "runtime/generation.h"
#include "runtime/inference_model.h"
#include "runtime/trainer.h"

namespace nats::launch {
namespace {

constexpr char kHelp[] =
    "usage: nats generate --checkpoint DIR --prompt TEXT [--max_tokens N] [--temperature T] [--top_k K]\n"
    "                     [--top_p P] [--seed S] [--policy nats|dense|streaming|h2o] [--budget N]\n"
    "                     [--max_context N] [--threads N] [--set A=B ...]\n"
    "       nats generate --config FILE.textproto --prompt TEXT [...]   (random weights, for timing)\n"
    "  --checkpoint DIR   a run's checkpoint root (e.g. runs/tiny/ckpt: its newest complete step) or\n"
    "                     one step directory: the model's config and trained weights\n"
    "  --config FILE      instead of --checkpoint: a config (model, nats, data.tokenizer) with the random\n"
    "                     initialisation of train.seed; the text is noise, the cache and speed are real\n"
    "  --set A=B          override a config field (repeatable); with --checkpoint only fields that keep the\n"
    "                     model's shape, e.g. --set data.data_dir=DIR\n"
    "  --prompt TEXT      text to continue (tokenized with data.tokenizer from data.data_dir)\n"
    "  --max_tokens N     tokens to generate (default 64); stops early at <|endoftext|>\n"
    "  --temperature T    0 = greedy (default 1); --top_k K (0 = off), --top_p P (1 = off), --seed S "
    "(default 0)\n"
    "  --policy P         KV cache: nats (default; NAtS layers keep what the scorer selects), dense (every "
    "token),\n"
    "                     streaming (4 sink tokens + recent), h2o (heavy hitters + recent)\n"
    "  --budget N         entries per KV head for streaming (default 68) and h2o (default 128)\n"
    "  --max_context N    prompt + generated tokens allowed (default model.context_length)\n"
    "  --threads N        intra-op threads (default: all cores)\n";

// --weights read a torch::save'd module, which nothing in this project writes; checkpoints replaced it.
// Named here (not merely unknown) so that an old command line gets the replacement, not the flag list.
bool GivesRemovedWeightsFlag(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--weights" || arg.rfind("--weights=", 0) == 0) return true;
  }
  return false;
}

int UsageError(const std::string& message) {
  std::fprintf(stderr, "generate: %s\n", message.c_str());
  return 2;
}

template <typename T>
bool ParseNumber(const ParsedFlags& flags, const std::string& name, T* out, std::string* error) {
  if (!flags.Has(name)) return true;
  const std::string text = flags.Get(name);
  bool ok;
  if constexpr (std::is_floating_point_v<T>) {
    ok = absl::SimpleAtod(text, out);
  } else {
    ok = absl::SimpleAtoi(text, out);
  }
  if (!ok) *error = absl::StrCat("--", name, " expects a number, got '", text, "'");
  return ok;
}

std::string Bytes(int64_t bytes) {
  if (bytes >= (int64_t{1} << 20)) return absl::StrFormat("%.2f MiB", bytes / 1048576.0);
  return absl::StrFormat("%.1f KiB", bytes / 1024.0);
}

int GenerateWithFlags(int argc, char** argv) {
  if (GivesRemovedWeightsFlag(argc, argv)) {
    return UsageError("--weights was removed; use --checkpoint RUN/ckpt (a run's checkpoint root or step)");
  }
  ParsedFlags parsed;
  if (auto exit_code =
          ParseCommandFlags(argc, argv,
                            {"checkpoint", "config", "set", "prompt", "max_tokens", "temperature", "top_k",
                             "top_p", "seed", "policy", "budget", "max_context", "threads"},
                            {}, kHelp, &parsed))
    return *exit_code;
  const ParsedFlags* flags = &parsed;
  if (flags->Has("checkpoint") == flags->Has("config")) {
    return UsageError(
        "give exactly one of --checkpoint DIR (a trained run, e.g. runs/tiny/ckpt) or --config FILE");
  }
  if (!flags->Has("prompt")) return UsageError("--prompt is required: the text to continue");
  std::vector<std::string> overrides;
  if (auto it = flags->values.find("set"); it != flags->values.end()) overrides = it->second;

  // A checkpoint carries its config and weights; a bare config gives random weights.
  std::optional<InferenceModel> loaded;
  absl::StatusOr<config::Config> cfg = config::Config();
  if (flags->Has("checkpoint")) {
    auto model = LoadModelForInference(flags->Get("checkpoint"), overrides);
    if (!model.ok()) return UsageError(std::string(model.status().message()));
    loaded = std::move(*model);
    cfg = loaded->config;
  } else {
    cfg = LoadConfigFile(flags->Get("config"));
    if (!cfg.ok()) return UsageError(std::string(cfg.status().message()));
    for (const std::string& assignment : overrides) {
      if (absl::Status s = ApplyOverride(assignment, &*cfg); !s.ok())
        return UsageError(std::string(s.message()));
    }
  }
  if (absl::Status s = ValidateConfig(*cfg); !s.ok()) return UsageError(std::string(s.message()));

  GenerationOptions opt;
  int64_t threads = 0;
  opt.max_positions = cfg->model().context_length();
  std::string error;
  if (!ParseNumber(*flags, "max_tokens", &opt.max_tokens, &error) ||
      !ParseNumber(*flags, "temperature", &opt.sampling.temperature, &error) ||
      !ParseNumber(*flags, "top_k", &opt.sampling.top_k, &error) ||
      !ParseNumber(*flags, "top_p", &opt.sampling.top_p, &error) ||
      !ParseNumber(*flags, "seed", &opt.sampling.seed, &error) ||
      !ParseNumber(*flags, "budget", &opt.policy.budget, &error) ||
      !ParseNumber(*flags, "max_context", &opt.max_positions, &error) ||
      !ParseNumber(*flags, "threads", &threads, &error)) {
    return UsageError(error);
  }
  if (opt.max_positions < 1) return UsageError("--max_context must be >= 1");
  auto policy = ParseCachePolicy(flags->Get("policy", "nats"));
  if (!policy.ok()) return UsageError(std::string(policy.status().message()));
  opt.policy.policy = *policy;
  if (!flags->Has("budget")) {
    // The paper's baselines (reference eval.yaml): StreamingLLM 4 sink + 64 recent, H2O 64 heavy + 64 recent.
    if (*policy == CachePolicy::kStreaming) opt.policy.budget = 68;
    if (*policy == CachePolicy::kH2O) opt.policy.budget = 128;
  } else if (*policy == CachePolicy::kNats || *policy == CachePolicy::kDense) {
    std::fprintf(stderr, "generate: warning: --budget applies to --policy streaming|h2o only; ignored\n");
  }
  if (*policy == CachePolicy::kNats && cfg->model().attention() != config::ModelConfig::NATS) {
    std::fprintf(stderr, "generate: note: model.attention is DENSE, so --policy nats keeps every token\n");
  }
  at::set_num_threads(threads > 0 ? static_cast<int>(threads) : DefaultThreadsPerRank());

  auto tokenizer = data::MakeTokenizer(cfg->data().tokenizer(), cfg->data().data_dir());
  if (!tokenizer.ok()) return UsageError(std::string(tokenizer.status().message()));
  if ((*tokenizer)->vocab_size() > cfg->model().vocab_size()) {
    return UsageError(absl::StrCat("tokenizer '", (*tokenizer)->name(), "' has ", (*tokenizer)->vocab_size(),
                                   " ids but model.vocab_size is ", cfg->model().vocab_size(),
                                   "; set data.tokenizer to the one the model was trained with"));
  }
  const std::string prompt_text = flags->Get("prompt");
  std::vector<int64_t> prompt;
  for (int32_t id : (*tokenizer)->Encode(prompt_text)) prompt.push_back(id);
  if (prompt.empty()) return UsageError("--prompt is empty; give some text to continue");

  Transformer model{nullptr};
  if (loaded) {
    model = loaded->model;
    std::fprintf(stderr, "generate: model of %s (step %lld)\n", loaded->step_dir.c_str(),
                 static_cast<long long>(loaded->step));
  } else {
    torch::manual_seed(cfg->train().seed());
    model = Transformer(ModelSpecFromConfig(*cfg));
  }
  if (!loaded) {
    std::fprintf(stderr,
                 "generate: warning: no --checkpoint; using the random initialisation of the config "
                 "(seed %llu), so the text is noise\n",
                 static_cast<unsigned long long>(cfg->train().seed()));
  }
  opt.stop_token = (*tokenizer)->eot_id();

  bool echoed = false;  // the prompt is echoed with the first token, after Generate has accepted the options
  auto result = Generate(model, prompt, opt, [&](int64_t id) {
    if (!echoed) {
      std::fwrite(prompt_text.data(), 1, prompt_text.size(), stdout);
      echoed = true;
    }
    if (id == opt.stop_token) return;
    const int32_t one = static_cast<int32_t>(id);
    auto text = (*tokenizer)->Decode(absl::Span<const int32_t>(&one, 1));
    if (text.ok()) {
      std::fwrite(text->data(), 1, text->size(), stdout);
      std::fflush(stdout);
    }
  });
  if (!result.ok()) return UsageError(std::string(result.status().message()));
  std::fputs("\n", stdout);
  std::fflush(stdout);

  const CacheSummary& c = result->cache;
  const double decode_rate =
      result->decode_seconds > 0 ? result->tokens.size() / result->decode_seconds : 0.0;
  std::string layers;
  for (double f : c.layer_kv_fraction)
    absl::StrAppend(&layers, layers.empty() ? "" : " ", absl::StrFormat("%.3f", f));
  std::fprintf(stderr,
               "generate: %zu prompt + %zu generated tokens; prefill %.3f s (%.0f tok/s), decode %.1f tok/s\n"
               "generate: cache (%s, %d layers): %lld retained entries vs %lld dense (%.1f%%), "
               "|G|+|L|+W = %lld; %s held (peak %s, allocated %s) vs %s dense\n"
               "generate: kv fraction per layer: %s\n",
               prompt.size(), result->tokens.size(), result->prefill_seconds,
               result->prefill_seconds > 0 ? prompt.size() / result->prefill_seconds : 0.0, decode_rate,
               CachePolicyName(opt.policy.policy).c_str(), static_cast<int>(c.layer_kv_fraction.size()),
               static_cast<long long>(c.retained_entries), static_cast<long long>(c.dense_entries),
               c.dense_entries > 0 ? 100.0 * c.retained_entries / c.dense_entries : 0.0,
               static_cast<long long>(c.reference_entries), Bytes(c.bytes).c_str(),
               Bytes(c.peak_bytes).c_str(), Bytes(c.allocated_bytes).c_str(), Bytes(c.dense_bytes).c_str(),
               layers.c_str());
  return 0;
}

}  // namespace

int RunGenerate(int argc, char** argv) {
  try {
    return GenerateWithFlags(argc, argv);
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "generate: %s\n", e.what_without_backtrace());
    return 1;
  }
}

}  // namespace nats::launch
