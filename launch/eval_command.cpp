// `nats eval`: perplexity of a trained checkpoint on held-out token windows, by full forward and/or by
// prefill + token-by-token decode with a KV-cache policy (NAtS, dense, StreamingLLM, H2O), with the KV
// fraction each keeps. One table row per policy on stdout; one JSON line per policy in the --json file.
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "data/loader.h"
#include "data/token_corpus.h"
#include "data/tokenizer.h"
#include "launch/commands.h"
#include "launch/flag_parser.h"
#include "nats/cached_perplexity.h"
#include "nats/kv_cache.h"
#include "runtime/inference_model.h"
#include "runtime/metrics_log.h"
#include "runtime/trainer.h"

namespace nats::launch {
namespace {

constexpr char kHelp[] =
    "usage: nats eval --checkpoint DIR [--data PATH] [--windows N] [--mode forward|decode|both]\n"
    "                 [--policy P[,P...]|all] [--budget N|match] [--prefill N] [--json FILE] [--set A=B ...]\n"
    "                 [--threads N]\n"
    "  --checkpoint DIR  a step directory or a run's checkpoint root (newest complete checkpoint)\n"
    "  --data PATH       token shard, directory of shards or glob to evaluate (default: the checkpoint\n"
    "                    config's data.val_path)\n"
    "  --windows N       sequential windows of model.context_length + 1 tokens (default 8)\n"
    "  --mode M          forward: one full forward per window; decode: prefill --prefill tokens, then decode "
    "one\n"
    "                    token at a time with the cache policy; both (default): both, and check they agree\n"
    "  --policy P        cache policies for decode, comma-separated: nats, dense, streaming, h2o (default\n"
    "                    nats; all = nats,dense,streaming,h2o)\n"
    "  --budget N        entries per KV head for streaming (default 68) and h2o (default 128)\n"
    "  --budget match    streaming and h2o at the NAtS cache size: the budget whose cache holds on average as\n"
    "                    many entries per KV head as this checkpoint's NAtS cache (measured over the same\n"
    "                    decode steps); the default with --policy all\n"
    "  --json FILE       also write one JSON object per policy (one line each) to FILE; stdout keeps the table\n"
    "  --prefill N       decode mode: tokens of each window given to the prefill (default 1)\n"
    "  --set A=B         override a config field that keeps the model's shape (repeatable)\n"
    "  --threads N       intra-op threads (default: all cores)\n";

struct Row {
  std::string policy;
  int64_t budget = 0;       // streaming / h2o only
  std::string budget_rule;  // "match", "given" or "default" (streaming / h2o only)
  PerplexityResult forward, decode;
  double decode_seconds = 0;  // wall time of the prefills and decode steps of every window
  bool has_forward = false, has_decode = false;
};

// "98.0 KiB": cache sizes in the table (the JSON keeps the bytes).
std::string FormatKib(int64_t bytes) { return absl::StrFormat("%.1f KiB", static_cast<double>(bytes) / 1024.0); }

bool ParseInt(const ParsedFlags& flags, const std::string& name, int64_t fallback, int64_t* out) {
  const std::string v = flags.Get(name, std::to_string(fallback));
  if (!absl::SimpleAtoi(v, out) || *out < 0) {
    std::fprintf(stderr, "eval: --%s=%s is not a non-negative integer\n", name.c_str(), v.c_str());
    return false;
  }
  return true;
}

// Token-weighted mean of per-window results.
void Accumulate(const PerplexityResult& r, PerplexityResult* sum) {
  const double w = static_cast<double>(r.predicted);
  sum->loss += r.loss * w;
  sum->kv_fraction += r.kv_fraction * w;
  sum->reference_kv_fraction += r.reference_kv_fraction * w;
  sum->kv_entries += r.kv_entries * w;
  if (sum->layer_kv_fraction.size() < r.layer_kv_fraction.size())
    sum->layer_kv_fraction.resize(r.layer_kv_fraction.size());
  for (size_t l = 0; l < r.layer_kv_fraction.size(); ++l)
    sum->layer_kv_fraction[l] += r.layer_kv_fraction[l] * w;
  sum->peak_cache_bytes = std::max(sum->peak_cache_bytes, r.peak_cache_bytes);
  sum->dense_cache_bytes = std::max(sum->dense_cache_bytes, r.dense_cache_bytes);
  sum->predicted += r.predicted;
}

void Finish(PerplexityResult* sum) {
  const double w = std::max<double>(1, sum->predicted);
  sum->loss /= w;
  sum->perplexity = std::exp(sum->loss);
  sum->kv_fraction /= w;
  sum->reference_kv_fraction /= w;
  sum->kv_entries /= w;
  for (double& f : sum->layer_kv_fraction) f /= w;
}

int EvalWithFlags(int argc, char** argv) {
  ParsedFlags parsed;
  if (auto exit_code = ParseCommandFlags(
          argc, argv,
          {"checkpoint", "data", "windows", "mode", "policy", "budget", "prefill", "json", "set", "threads"}, {},
          kHelp, &parsed))
    return *exit_code;
  const ParsedFlags* flags = &parsed;
  if (!flags->Has("checkpoint")) {
    std::fprintf(stderr, "eval: --checkpoint is required (e.g. runs/tiny/ckpt)\n%s", kHelp);
    return 2;
  }
  int64_t windows = 0, budget = 0, prefill = 0, threads = 0;
  if (!ParseInt(*flags, "windows", 8, &windows) || !ParseInt(*flags, "prefill", 1, &prefill) ||
      !ParseInt(*flags, "threads", 0, &threads)) {
    return 2;
  }
  const std::string policy_flag = flags->Get("policy", "nats");
  const bool match_budget = flags->Get("budget", policy_flag == "all" ? "match" : "") == "match";
  if (!match_budget && !ParseInt(*flags, "budget", 0, &budget)) return 2;
  const std::string json_path = flags->Get("json");
  if (flags->Has("json") && json_path.empty()) {
    std::fprintf(stderr, "eval: --json needs a file name\n");
    return 2;
  }
  if (windows < 1) {
    std::fprintf(stderr, "eval: --windows=%lld: evaluate at least 1 window\n",
                 static_cast<long long>(windows));
    return 2;
  }
  const std::string mode = flags->Get("mode", "both");
  if (mode != "forward" && mode != "decode" && mode != "both") {
    std::fprintf(stderr, "eval: --mode=%s: allowed values are forward, decode, both\n", mode.c_str());
    return 2;
  }
  std::vector<std::string> policies = absl::StrSplit(policy_flag, ',');
  if (policy_flag == "all") policies = {"nats", "dense", "streaming", "h2o"};
  for (const std::string& name : policies) {  // before the checkpoint is loaded: a typo fails in milliseconds
    if (auto policy = ParseCachePolicy(name); !policy.ok()) {
      std::fprintf(stderr, "eval: %s\n", std::string(policy.status().message()).c_str());
      return 2;
    }
  }
  std::vector<std::string> overrides;
  if (auto it = flags->values.find("set"); it != flags->values.end()) overrides = it->second;

  std::ofstream json;  // opened before the work, so that a wrong path fails at once
  if (!json_path.empty()) {
    json.open(json_path, std::ios::out | std::ios::trunc);
    if (!json) {
      std::fprintf(stderr, "eval: --json %s: cannot open for writing\n", json_path.c_str());
      return 1;
    }
  }
  at::set_num_threads(threads > 0 ? static_cast<int>(threads) : DefaultThreadsPerRank());
  auto loaded = LoadModelForInference(flags->Get("checkpoint"), overrides);
  if (!loaded.ok()) {
    std::fprintf(stderr, "eval: %s\n", std::string(loaded.status().message()).c_str());
    return 1;
  }
  const std::string data_path = flags->Get("data", loaded->config.data().val_path());
  auto corpus = data::TokenCorpus::Open(data_path);
  if (!corpus.ok()) {
    std::fprintf(stderr, "eval: %s\n", std::string(corpus.status().message()).c_str());
    return 1;
  }
  const int64_t seq = loaded->config.model().context_length();
  const int64_t vocab = loaded->config.model().vocab_size();
  // A decode window has seq + 1 tokens: the prefill covers 1..seq of them, the rest are decoded one by one.
  if (mode != "forward" && (prefill < 1 || prefill > seq)) {
    std::fprintf(
        stderr,
        "eval: --prefill=%lld is outside [1, %lld]: a window has model.context_length + 1 = %lld tokens and "
        "at least the last one is decoded (model.context_length of %s is %lld)\n",
        static_cast<long long>(prefill), static_cast<long long>(seq), static_cast<long long>(seq + 1),
        loaded->step_dir.c_str(), static_cast<long long>(seq));
    return 2;
  }
  auto identity = data::TokenizerIdentityOf(loaded->config.data().tokenizer());
  absl::Status fits =
      identity.ok() ? data::CheckCorpusFitsModel(*corpus, "--data", *identity, vocab) : identity.status();
  if (!fits.ok()) {
    std::fprintf(stderr, "eval: %s\n", std::string(fits.message()).c_str());
    return 1;
  }
  const int64_t available = static_cast<int64_t>(data::NumWindows(corpus->num_tokens(), seq));
  windows = std::min(windows, available);
  if (windows <= 0) {
    std::fprintf(stderr, "eval: %s is shorter than one window of model.context_length + 1 = %lld tokens\n",
                 data_path.c_str(), static_cast<long long>(seq + 1));
    return 1;
  }
  auto rows_or = data::EvalWindows(*corpus, seq, 0, windows);
  if (!rows_or.ok()) {
    std::fprintf(stderr, "eval: %s\n", std::string(rows_or.status().message()).c_str());
    return 1;
  }
  // The header's vocabulary bounds what a correct writer stored; a damaged shard may still hold larger ids.
  for (size_t i = 0; i < rows_or->size(); ++i) {
    const int32_t id = (*rows_or)[i];
    if (id < 0 || id >= vocab) {
      std::fprintf(
          stderr,
          "eval: %s: token %zu of the evaluated windows is %d, outside the model's vocabulary [0, %lld); "
          "the shard is damaged or from another tokenizer\n",
          data_path.c_str(), i, id, static_cast<long long>(vocab));
      return 1;
    }
  }
  at::Tensor all = torch::from_blob(rows_or->data(), {windows, seq + 1}, torch::kInt32).to(torch::kInt64);
  std::printf("eval %s (step %lld) on %s: %lld windows of %lld tokens\n", loaded->step_dir.c_str(),
              static_cast<long long>(loaded->step), data_path.c_str(), static_cast<long long>(windows),
              static_cast<long long>(seq + 1));

  torch::NoGradGuard no_grad;
  std::vector<Row> rows;
  PerplexityResult forward_sum;
  if (mode != "decode") {
    for (int64_t w = 0; w < windows; ++w)
      Accumulate(PerplexityByForward(loaded->model, all.narrow(0, w, 1)), &forward_sum);
    Finish(&forward_sum);
  }
  // Every window decoded under one policy; the seconds cover the prefills and decode steps.
  auto decode_all = [&](const CachePolicyConfig& pc, double* seconds) {
    PerplexityResult sum;
    const auto start = std::chrono::steady_clock::now();
    for (int64_t w = 0; w < windows; ++w)
      Accumulate(PerplexityByDecode(loaded->model, all.narrow(0, w, 1), pc, prefill), &sum);
    *seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    Finish(&sum);
    return sum;
  };
  // --budget match: the NAtS cache's mean entries per KV head, measured once (by the nats row when there is one).
  std::optional<PerplexityResult> nats_decode;
  double nats_seconds = 0;
  int64_t matched_budget = 0;
  if (match_budget && mode != "forward") {
    nats_decode = decode_all(CachePolicyConfig{}, &nats_seconds);
    matched_budget = BudgetForMeanEntries(nats_decode->kv_entries, seq + 1, prefill);
  }
  for (const std::string& name : policies) {
    auto policy = ParseCachePolicy(name);
    if (!policy.ok()) {
      std::fprintf(stderr, "eval: --policy: %s\n", std::string(policy.status().message()).c_str());
      return 2;
    }
    Row row;
    row.policy = name;
    CachePolicyConfig pc;
    pc.policy = *policy;
    const bool evicting = *policy == CachePolicy::kStreaming || *policy == CachePolicy::kH2O;
    if (matched_budget > 0) {
      // The smallest budget a policy accepts when the NAtS cache is smaller still (StreamingLLM keeps its sinks).
      pc.budget = std::max<int64_t>(matched_budget, *policy == CachePolicy::kStreaming ? pc.sink_tokens + 1 : 2);
      row.budget_rule = "match";
    } else if (budget > 0) {
      pc.budget = budget;
      row.budget_rule = "given";
    } else {
      pc.budget = *policy == CachePolicy::kStreaming ? 68 : 128;
      row.budget_rule = "default";
    }
    row.budget = evicting ? pc.budget : 0;
    if (!evicting) row.budget_rule.clear();
    if (absl::Status s = ValidateCachePolicy(pc); !s.ok()) {
      std::fprintf(stderr, "eval: %s\n", std::string(s.message()).c_str());
      return 2;
    }
    if (mode != "decode") {
      row.forward = forward_sum;
      row.has_forward = true;
    }
    if (mode != "forward") {
      if (*policy == CachePolicy::kNats && nats_decode) {
        row.decode = *nats_decode;
        row.decode_seconds = nats_seconds;
      } else {
        row.decode = decode_all(pc, &row.decode_seconds);
      }
      row.has_decode = true;
    }
    rows.push_back(row);
  }

  std::printf(
      "| policy | budget | ppl (forward) | ppl (decode) | KV fraction | KV entries / head | peak cache (of dense) "
      "| decode tok/s |\n");
  std::printf("|---|---|---|---|---|---|---|---|\n");
  int exit_code = 0;
  for (const Row& r : rows) {
    const PerplexityResult& d = r.has_decode ? r.decode : r.forward;
    const double cache_ratio = d.dense_cache_bytes > 0
                                   ? static_cast<double>(d.peak_cache_bytes) / d.dense_cache_bytes
                                   : std::nan("");
    const double tokens_per_s = r.decode_seconds > 0 ? d.predicted / r.decode_seconds : std::nan("");
    std::printf("| %s | %s | %s | %s | %.4f | %s | %s | %s |\n", r.policy.c_str(),
                r.budget ? absl::StrCat(r.budget, r.budget_rule == "match" ? " (match)" : "").c_str() : "-",
                r.has_forward ? absl::StrFormat("%.3f", r.forward.perplexity).c_str() : "-",
                r.has_decode ? absl::StrFormat("%.3f", r.decode.perplexity).c_str() : "-", d.kv_fraction,
                r.has_decode ? absl::StrFormat("%.1f", d.kv_entries).c_str() : "-",
                r.has_decode ? absl::StrFormat("%s (%.3f)", FormatKib(d.peak_cache_bytes), cache_ratio).c_str()
                             : "-",
                r.has_decode ? absl::StrFormat("%.0f", tokens_per_s).c_str() : "-");
    JsonLine line;
    line.Add("kind", "eval")
        .Add("checkpoint", loaded->step_dir)
        .Add("step", loaded->step)
        .Add("data", data_path)
        .Add("policy", r.policy)
        .Add("budget", r.budget)
        .Add("budget_rule", r.budget_rule)
        .Add("windows", windows)
        .Add("prefill", prefill)
        .Add("tokens", d.predicted)
        .Add("kv_fraction", d.kv_fraction)
        .Add("reference_kv_fraction", d.reference_kv_fraction)
        .AddArray("layer_kv_fraction", d.layer_kv_fraction)
        .Add("peak_cache_bytes", d.peak_cache_bytes)
        .Add("dense_cache_bytes", d.dense_cache_bytes);
    if (r.has_forward) line.Add("loss_forward", r.forward.loss).Add("ppl_forward", r.forward.perplexity);
    if (r.has_decode) {
      line.Add("loss_decode", r.decode.loss)
          .Add("ppl_decode", r.decode.perplexity)
          .Add("kv_entries", r.decode.kv_entries)
          .Add("decode_seconds", r.decode_seconds)
          .Add("decode_tokens_per_s", tokens_per_s)
          .Add("threads", at::get_num_threads());
      // The StreamingLLM / H2O budget at this cache's size (what --budget match uses), for runs of other models.
      if (r.policy == "nats") line.Add("matching_budget", BudgetForMeanEntries(r.decode.kv_entries, seq + 1, prefill));
    }
    if (json.is_open()) json << line.str() << "\n";
    // The NAtS cache is exact (docs/method.md 6): decoding must give the model's own forward loss. (Other policies
    // change what the model sees, so they differ from it by design.)
    if (r.has_forward && r.has_decode && r.policy == "nats" &&
        std::abs(r.forward.loss - r.decode.loss) > 1e-3) {
      std::fprintf(stderr, "eval: %s decode loss %.6f differs from the forward loss %.6f\n", r.policy.c_str(),
                   r.decode.loss, r.forward.loss);
      exit_code = 1;
    }
  }
  if (nats_decode) {
    std::printf(
        "budget (match): streaming and h2o get %lld entries per KV head, so that over the decode steps they hold on "
        "average as many entries as the NAtS cache does (%.1f per KV head, all layers)\n",
        static_cast<long long>(matched_budget), nats_decode->kv_entries);
  }
  if (json.is_open()) {
    json.close();
    if (!json) {
      std::fprintf(stderr, "eval: --json %s: write failed\n", json_path.c_str());
      return 1;
    }
  }
  return exit_code;
}

}  // namespace

int RunEval(int argc, char** argv) { return EvalWithFlags(argc, argv); }

}  // namespace nats::launch
