// `nats eval`: two tasks on a trained checkpoint, each under the KV-cache policies (NAtS, dense,
// StreamingLLM, H2O) with the KV fraction each keeps.
//   --task perplexity (default): held-out token windows, by full forward and/or by prefill + token-by-token
//     decode. One table row per policy on stdout; one JSON line per policy in the --json file.
//   --task passkey: synthetic passkey retrieval by exact match over prompt lengths and key depths
//     (runtime/passkey.h). One table row per policy x length; one JSON line per (policy, length, depth).
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
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
#include "runtime/passkey.h"
#include "runtime/trainer.h"

namespace nats::launch {
namespace {

constexpr char kHelp[] =
    "usage: nats eval --checkpoint DIR [--task perplexity] [--data PATH] [--windows N]\n"
    "                 [--mode forward|decode|both] [--policy P[,P...]|all] [--budget N|match]\n"
    "                 [--prefill N] [--json FILE] [--set A=B ...] [--threads N]\n"
    "       nats eval --checkpoint DIR --task passkey [--filler FILE] [--lengths N[,N...]]\n"
    "                 [--depths D[,D...]] [--samples N] [--seed N] [--max_new_tokens N]\n"
    "                 [--policy P[,P...]|all] [--budget N|match] [--json FILE] [--set A=B ...]\n"
    "                 [--threads N]\n"
    "  --checkpoint DIR  a step directory or a run's checkpoint root (newest complete checkpoint)\n"
    "  --task T          perplexity (default) or passkey\n"
    "perplexity:\n"
    "  --data PATH       token shard, directory of shards or glob to evaluate (default: the checkpoint\n"
    "                    config's data.val_path)\n"
    "  --windows N       sequential windows of model.context_length + 1 tokens (default 8)\n"
    "  --mode M          forward: one full forward per window; decode: prefill --prefill tokens, then decode "
    "one\n"
    "                    token at a time with the cache policy; both (default): both, and check they agree\n"
    "  --policy P        cache policies for decode, comma-separated: nats, dense, streaming, h2o (default\n"
    "                    nats; all = nats,dense,streaming,h2o)\n"
    "  --budget N        entries per KV head for streaming (default 68) and h2o (default 128)\n"
    "  --budget match    streaming and h2o at the NAtS cache size: the budget whose cache holds on average "
    "as\n"
    "                    many entries per KV head as this checkpoint's NAtS cache (measured over the same\n"
    "                    decode steps); the default with --policy all\n"
    "  --json FILE       also write one JSON object per policy (one line each) to FILE; stdout keeps the "
    "table\n"
    "  --prefill N       decode mode: tokens of each window given to the prefill (default 1)\n"
    "  --set A=B         override a config field that keeps the model's shape (repeatable)\n"
    "  --threads N       intra-op threads (default: all cores)\n"
    "passkey (runtime/passkey.h, docs/passkey.md; the template of bench/make_passkey_corpus.py): a 5-digit\n"
    "key hidden in filler text at each depth and asked for at the end; greedy answer, exact match:\n"
    "  --filler FILE     UTF-8 text to cut passages from (default: the checkpoint config's\n"
    "                    data.val_path shards, decoded); whitespace runs become single spaces\n"
    "  --lengths N,...   prompt lengths in tokens of the model's tokenizer, key sentence and question\n"
    "                    included (default 256,512); past model.context_length RoPE extends\n"
    "  --depths D,...    where the key sits, fractions of the filler in [0, 1] (default 0,0.25,0.5,0.75,1)\n"
    "  --samples N       prompts per (length, depth) (default 10); the depths of a sample share its key\n"
    "                    and passage\n"
    "  --seed N          seed of the keys and passages (default 0)\n"
    "  --max_new_tokens N  greedy tokens per prompt at most (default 8); decoding stops once 7 bytes\n"
    "                    (a space, 5 digits, one more character) are out\n"
    "  --policy, --budget, --json, --set, --threads as above; --budget match = the NAtS cache's mean\n"
    "                    entries per KV head at the end of the prefill of the same prompts, per length\n";

struct Row {
  std::string policy;
  int64_t budget = 0;       // streaming / h2o only
  std::string budget_rule;  // "match", "given" or "default" (streaming / h2o only)
  PerplexityResult forward, decode;
  double decode_seconds = 0;  // wall time of the prefills and decode steps of every window
  bool has_forward = false, has_decode = false;
};

// "98.0 KiB": cache sizes in the table (the JSON keeps the bytes).
std::string FormatKib(int64_t bytes) {
  return absl::StrFormat("%.1f KiB", static_cast<double>(bytes) / 1024.0);
}

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

// The common start of both tasks once their flags are checked: opens --json before the work (a wrong path
// fails at once), sets the threads, loads the checkpoint with the --set overrides. Returns the exit code on
// failure.
std::optional<int> OpenJsonAndLoad(const ParsedFlags& flags, const std::string& json_path, int64_t threads,
                                   std::ofstream* json, std::optional<InferenceModel>* loaded) {
  if (!json_path.empty()) {
    json->open(json_path, std::ios::out | std::ios::trunc);
    if (!*json) {
      std::fprintf(stderr, "eval: --json %s: cannot open for writing\n", json_path.c_str());
      return 1;
    }
  }
  std::vector<std::string> overrides;
  if (auto it = flags.values.find("set"); it != flags.values.end()) overrides = it->second;
  at::set_num_threads(threads > 0 ? static_cast<int>(threads) : DefaultThreadsPerRank());
  auto model = LoadModelForInference(flags.Get("checkpoint"), overrides);
  if (!model.ok()) {
    std::fprintf(stderr, "eval: %s\n", std::string(model.status().message()).c_str());
    return 1;
  }
  loaded->emplace(std::move(*model));
  return std::nullopt;
}

int PerplexityWithFlags(int argc, char** argv) {
  ParsedFlags parsed;
  if (auto exit_code = ParseCommandFlags(argc, argv,
                                         {"checkpoint", "task", "data", "windows", "mode", "policy", "budget",
                                          "prefill", "json", "set", "threads"},
                                         {}, kHelp, &parsed))
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
  std::ofstream json;
  std::optional<InferenceModel> loaded;
  if (auto exit = OpenJsonAndLoad(*flags, json_path, threads, &json, &loaded)) return *exit;
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
  // --budget match: the NAtS cache's mean entries per KV head, measured once (by the nats row when there is
  // one).
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
      // The smallest budget a policy accepts when the NAtS cache is smaller still (StreamingLLM keeps its
      // sinks).
      pc.budget =
          std::max<int64_t>(matched_budget, *policy == CachePolicy::kStreaming ? pc.sink_tokens + 1 : 2);
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
      "| policy | budget | ppl (forward) | ppl (decode) | KV fraction | KV entries / head | peak cache (of "
      "dense) "
      "| decode tok/s |\n");
  std::printf("|---|---|---|---|---|---|---|---|\n");
  int exit_code = 0;
  for (const Row& r : rows) {
    const PerplexityResult& d = r.has_decode ? r.decode : r.forward;
    const double cache_ratio = d.dense_cache_bytes > 0
                                   ? static_cast<double>(d.peak_cache_bytes) / d.dense_cache_bytes
                                   : std::nan("");
    const double tokens_per_s = r.decode_seconds > 0 ? d.predicted / r.decode_seconds : std::nan("");
    std::printf(
        "| %s | %s | %s | %s | %.4f | %s | %s | %s |\n", r.policy.c_str(),
        r.budget ? absl::StrCat(r.budget, r.budget_rule == "match" ? " (match)" : "").c_str() : "-",
        r.has_forward ? absl::StrFormat("%.3f", r.forward.perplexity).c_str() : "-",
        r.has_decode ? absl::StrFormat("%.3f", r.decode.perplexity).c_str() : "-", d.kv_fraction,
        r.has_decode ? absl::StrFormat("%.1f", d.kv_entries).c_str() : "-",
        r.has_decode ? absl::StrFormat("%s (%.3f)", FormatKib(d.peak_cache_bytes), cache_ratio).c_str() : "-",
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
      // The StreamingLLM / H2O budget at this cache's size (what --budget match uses), for runs of other
      // models.
      if (r.policy == "nats")
        line.Add("matching_budget", BudgetForMeanEntries(r.decode.kv_entries, seq + 1, prefill));
    }
    if (json.is_open()) json << line.str() << "\n";
    // The NAtS cache is exact (docs/method.md 6): decoding must give the model's own forward loss. (Other
    // policies change what the model sees, so they differ from it by design.)
    if (r.has_forward && r.has_decode && r.policy == "nats" &&
        std::abs(r.forward.loss - r.decode.loss) > 1e-3) {
      std::fprintf(stderr, "eval: %s decode loss %.6f differs from the forward loss %.6f\n", r.policy.c_str(),
                   r.decode.loss, r.forward.loss);
      exit_code = 1;
    }
  }
  if (nats_decode) {
    std::printf(
        "budget (match): streaming and h2o get %lld entries per KV head, so that over the decode steps they "
        "hold on "
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

// --task passkey ------------------------------------------------------------------------------------------

// Comma-separated values of one flag; false (after naming the flag and an example) when one does not parse or
// is out of range.
bool ParseLengths(const ParsedFlags& flags, std::vector<int64_t>* out) {
  const std::string v = flags.Get("lengths", "256,512");
  for (absl::string_view part : absl::StrSplit(v, ',')) {
    int64_t n = 0;
    if (!absl::SimpleAtoi(part, &n) || n < 1) {
      std::fprintf(stderr,
                   "eval: --lengths=%s: give prompt lengths in tokens, positive and comma-separated "
                   "(e.g. --lengths 256,512)\n",
                   v.c_str());
      return false;
    }
    out->push_back(n);
  }
  return true;
}

bool ParseDepths(const ParsedFlags& flags, std::vector<double>* out) {
  const std::string v = flags.Get("depths", "0,0.25,0.5,0.75,1");
  for (absl::string_view part : absl::StrSplit(v, ',')) {
    double d = 0;
    if (!absl::SimpleAtod(part, &d) || !(d >= 0.0 && d <= 1.0)) {
      std::fprintf(stderr,
                   "eval: --depths=%s: give fractions of the filler in [0, 1], comma-separated "
                   "(e.g. --depths 0,0.5,1)\n",
                   v.c_str());
      return false;
    }
    out->push_back(d);
  }
  return true;
}

// The filler text, whitespace collapsed: --filler FILE, else the checkpoint's validation shards decoded
// (documents joined by a space: the end-of-text id would otherwise decode to "<|endoftext|>" inside
// passages).
absl::StatusOr<std::string> LoadFiller(const ParsedFlags& flags, const InferenceModel& loaded,
                                       const data::Tokenizer& tokenizer, std::string* name) {
  if (flags.Has("filler")) {
    *name = flags.Get("filler");
    std::ifstream in(*name, std::ios::binary);
    if (!in)
      return absl::NotFoundError(
          absl::StrCat("--filler ", *name, ": cannot open it; give a UTF-8 text file"));
    std::string raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return CollapseWhitespace(raw);
  }
  *name = loaded.config.data().val_path();
  auto corpus = data::TokenCorpus::Open(*name);
  if (!corpus.ok()) {
    return absl::Status(corpus.status().code(), absl::StrCat(corpus.status().message(),
                                                             " (the default filler; or give --filler FILE)"));
  }
  if (absl::Status s = data::CheckCorpusFitsModel(*corpus, "data.val_path", tokenizer.identity(),
                                                  loaded.config.model().vocab_size());
      !s.ok())
    return s;
  // 4M tokens are far more than any prompt needs and keep the decode of a large validation set short.
  const uint64_t count = std::min<uint64_t>(corpus->num_tokens(), uint64_t{4} << 20);
  std::vector<int32_t> ids(count);
  if (count > 0) corpus->Read(0, count, ids.data());
  std::string text;
  size_t begin = 0;
  for (size_t i = 0; i <= ids.size(); ++i) {
    if (i < ids.size() && ids[i] != tokenizer.eot_id()) continue;
    auto piece = tokenizer.Decode(absl::MakeConstSpan(ids).subspan(begin, i - begin));
    if (!piece.ok()) return piece.status();
    absl::StrAppend(&text, *piece, " ");
    begin = i + 1;
  }
  *name = absl::StrCat("data.val_path ", *name, " (decoded)");
  return CollapseWhitespace(text);
}

// One (policy, length, depth) cell.
struct PasskeyCell {
  int64_t samples = 0, correct = 0;
  double kv_fraction = 0, kv_entries = 0, prompt_tokens = 0, seconds = 0;  // sums until Finish
};

struct PasskeyRow {
  std::string policy;
  int64_t length = 0;
  int64_t budget = 0;              // streaming / h2o only
  std::string budget_rule;         // "match", "given" or "default" (streaming / h2o only)
  std::vector<PasskeyCell> cells;  // one per depth
  std::string example;             // the first sample's key and continuation
};

int PasskeyWithFlags(int argc, char** argv) {
  ParsedFlags flags;
  if (auto exit_code =
          ParseCommandFlags(argc, argv,
                            {"checkpoint", "task", "filler", "lengths", "depths", "samples", "seed",
                             "max_new_tokens", "policy", "budget", "json", "set", "threads"},
                            {}, kHelp, &flags))
    return *exit_code;
  if (!flags.Has("checkpoint")) {
    std::fprintf(stderr, "eval: --checkpoint is required (e.g. runs/tiny/ckpt)\n%s", kHelp);
    return 2;
  }
  std::vector<int64_t> lengths;
  std::vector<double> depths;
  int64_t samples = 0, seed = 0, max_new_tokens = 0, threads = 0, budget = 0;
  if (!ParseLengths(flags, &lengths) || !ParseDepths(flags, &depths) ||
      !ParseInt(flags, "samples", 10, &samples) || !ParseInt(flags, "seed", 0, &seed) ||
      !ParseInt(flags, "max_new_tokens", 8, &max_new_tokens) || !ParseInt(flags, "threads", 0, &threads)) {
    return 2;
  }
  if (samples < 1 || max_new_tokens < 1) {
    std::fprintf(stderr, "eval: --%s must be at least 1\n", samples < 1 ? "samples" : "max_new_tokens");
    return 2;
  }
  const std::string policy_flag = flags.Get("policy", "nats");
  const bool match_budget = flags.Get("budget", policy_flag == "all" ? "match" : "") == "match";
  if (!match_budget && !ParseInt(flags, "budget", 0, &budget)) return 2;
  std::vector<std::string> policies = absl::StrSplit(policy_flag, ',');
  if (policy_flag == "all") policies = {"nats", "dense", "streaming", "h2o"};
  std::vector<CachePolicy> parsed_policies;
  for (const std::string& name : policies) {  // before the checkpoint is loaded: a typo fails in milliseconds
    auto policy = ParseCachePolicy(name);
    if (!policy.ok()) {
      std::fprintf(stderr, "eval: --policy: %s\n", std::string(policy.status().message()).c_str());
      return 2;
    }
    parsed_policies.push_back(*policy);
  }
  const std::string json_path = flags.Get("json");
  if (flags.Has("json") && json_path.empty()) {
    std::fprintf(stderr, "eval: --json needs a file name\n");
    return 2;
  }
  std::ofstream json;
  std::optional<InferenceModel> loaded;
  if (auto exit = OpenJsonAndLoad(flags, json_path, threads, &json, &loaded)) return *exit;
  auto tokenizer = data::MakeTokenizer(loaded->config.data().tokenizer(), loaded->config.data().data_dir());
  if (!tokenizer.ok()) {
    std::fprintf(stderr, "eval: %s\n", std::string(tokenizer.status().message()).c_str());
    return 1;
  }
  std::string filler_name;
  auto filler = LoadFiller(flags, *loaded, **tokenizer, &filler_name);
  if (!filler.ok()) {
    std::fprintf(stderr, "eval: %s\n", std::string(filler.status().message()).c_str());
    return 1;
  }
  const int64_t context = loaded->config.model().context_length();
  // Every model here has RoPE, whose tables extend on demand, so longer prompts run under every policy; the
  // note says the model never trained at those positions.
  for (int64_t length : lengths) {
    if (length + max_new_tokens > context) {
      std::fprintf(
          stderr,
          "eval: note: --lengths %lld plus the answer passes model.context_length %lld; RoPE positions "
          "extend beyond training there (length extrapolation)\n",
          static_cast<long long>(length), static_cast<long long>(context));
    }
  }
  // Prompts per length, built once and shared by every policy: [depth][sample].
  std::map<int64_t, std::vector<std::vector<PasskeySample>>> prompts;
  for (int64_t length : lengths) {
    auto& by_depth = prompts[length];
    for (double depth : depths) {
      by_depth.emplace_back();
      for (int64_t i = 0; i < samples; ++i) {
        auto sample = MakePasskeySample(**tokenizer, *filler, filler_name, length, depth,
                                        static_cast<uint64_t>(seed), i);
        if (!sample.ok()) {
          std::fprintf(stderr, "eval: %s\n", std::string(sample.status().message()).c_str());
          return absl::IsInvalidArgument(sample.status()) ? 2 : 1;
        }
        by_depth.back().push_back(*std::move(sample));
      }
    }
  }
  std::printf("passkey eval %s (step %lld), filler %s: %zu lengths x %zu depths x %lld samples, seed %lld\n",
              loaded->step_dir.c_str(), static_cast<long long>(loaded->step), filler_name.c_str(),
              lengths.size(), depths.size(), static_cast<long long>(samples), static_cast<long long>(seed));

  torch::NoGradGuard no_grad;
  // Every prompt of one length under one policy.
  auto run_length = [&](const std::string& name, const CachePolicyConfig& pc, int64_t length,
                        PasskeyRow* row) -> absl::Status {
    row->cells.assign(depths.size(), PasskeyCell{});
    for (size_t d = 0; d < depths.size(); ++d) {
      PasskeyCell& cell = row->cells[d];
      for (const PasskeySample& sample : prompts[length][d]) {
        auto outcome = RunPasskeySample(loaded->model, **tokenizer, sample, pc, max_new_tokens);
        if (!outcome.ok()) return outcome.status();
        if (row->example.empty()) {  // what the model said, for the progress line
          row->example =
              absl::StrCat("key ", sample.key, " -> \"", absl::CEscape(outcome->continuation), "\"");
        }
        const CacheSummary& c = outcome->prefill_cache;
        const double heads = c.tokens > 0 ? static_cast<double>(c.dense_entries) / c.tokens : 1.0;
        cell.samples += 1;
        cell.correct += outcome->correct;
        cell.kv_fraction +=
            c.dense_entries > 0 ? static_cast<double>(c.retained_entries) / c.dense_entries : 1.0;
        cell.kv_entries += c.retained_entries / heads;  // mean per (layer, KV head)
        cell.prompt_tokens += static_cast<double>(sample.tokens.size());
        cell.seconds += outcome->seconds;
      }
    }
    int64_t correct = 0, total = 0;
    double seconds = 0;
    for (const PasskeyCell& cell : row->cells) {
      correct += cell.correct;
      total += cell.samples;
      seconds += cell.seconds;
    }
    std::fprintf(stderr, "passkey: %s, length %lld: %lld/%lld correct, %.1f s (first: %s)\n", name.c_str(),
                 static_cast<long long>(length), static_cast<long long>(correct),
                 static_cast<long long>(total), seconds, row->example.c_str());
    return absl::OkStatus();
  };
  auto mean_entries = [](const PasskeyRow& row) {
    double entries = 0, n = 0;
    for (const PasskeyCell& cell : row.cells) {
      entries += cell.kv_entries;
      n += static_cast<double>(cell.samples);
    }
    return entries / std::max(1.0, n);
  };

  std::vector<PasskeyRow> rows;                           // length-major while running; printed policy-major
  std::map<int64_t, std::pair<int64_t, double>> matched;  // length -> (budget, NAtS mean entries per KV head)
  for (int64_t length : lengths) {
    std::optional<PasskeyRow> nats_row;
    if (match_budget) {
      // Evicting caches hold exactly `budget` entries after a prefill longer than it, so the budget at the
      // NAtS cache size is the NAtS mean itself, rounded.
      nats_row.emplace();
      nats_row->policy = "nats";
      nats_row->length = length;
      if (absl::Status s = run_length("nats", CachePolicyConfig{}, length, &*nats_row); !s.ok()) {
        std::fprintf(stderr, "eval: %s\n", std::string(s.message()).c_str());
        return 1;
      }
      const double mean = mean_entries(*nats_row);
      matched[length] = {std::max<int64_t>(1, std::llround(mean)), mean};
    }
    for (size_t p = 0; p < policies.size(); ++p) {
      const CachePolicy policy = parsed_policies[p];
      PasskeyRow row;
      row.policy = policies[p];
      row.length = length;
      CachePolicyConfig pc;
      pc.policy = policy;
      const bool evicting = policy == CachePolicy::kStreaming || policy == CachePolicy::kH2O;
      if (match_budget) {
        // The smallest budget a policy accepts when the NAtS cache is smaller still (StreamingLLM keeps its
        // sinks).
        pc.budget = std::max<int64_t>(matched[length].first,
                                      policy == CachePolicy::kStreaming ? pc.sink_tokens + 1 : 2);
        row.budget_rule = "match";
      } else if (budget > 0) {
        pc.budget = budget;
        row.budget_rule = "given";
      } else {
        pc.budget = policy == CachePolicy::kStreaming ? 68 : 128;
        row.budget_rule = "default";
      }
      row.budget = evicting ? pc.budget : 0;
      if (!evicting) row.budget_rule.clear();
      if (absl::Status s = ValidateCachePolicy(pc); !s.ok()) {
        std::fprintf(stderr, "eval: %s\n", std::string(s.message()).c_str());
        return 2;
      }
      if (policy == CachePolicy::kNats && nats_row) {
        row.cells = nats_row->cells;
      } else if (absl::Status s = run_length(row.policy, pc, length, &row); !s.ok()) {
        std::fprintf(stderr, "eval: %s\n", std::string(s.message()).c_str());
        return 1;
      }
      rows.push_back(std::move(row));
    }
  }
  std::stable_sort(rows.begin(), rows.end(), [&](const PasskeyRow& a, const PasskeyRow& b) {
    auto rank = [&](const std::string& name) { return std::find(policies.begin(), policies.end(), name); };
    return rank(a.policy) < rank(b.policy);
  });

  std::string header = "| policy | length | budget |", rule = "|---|---|---|";
  for (double depth : depths) {
    absl::StrAppend(&header, absl::StrFormat(" depth %g |", depth));
    absl::StrAppend(&rule, "---|");
  }
  std::printf("%s overall | KV entries / head | KV fraction |\n%s---|---|---|\n", header.c_str(),
              rule.c_str());
  for (const PasskeyRow& r : rows) {
    std::string line = absl::StrFormat(
        "| %s | %lld | %s |", r.policy, static_cast<long long>(r.length),
        r.budget ? absl::StrCat(r.budget, r.budget_rule == "match" ? " (match)" : "") : std::string("-"));
    int64_t correct = 0, total = 0;
    double kv_fraction = 0;
    for (size_t d = 0; d < depths.size(); ++d) {
      const PasskeyCell& c = r.cells[d];
      absl::StrAppend(&line, absl::StrFormat(" %.2f |", static_cast<double>(c.correct) / c.samples));
      correct += c.correct;
      total += c.samples;
      kv_fraction += c.kv_fraction;
      const double n = static_cast<double>(c.samples);
      JsonLine j;
      j.Add("kind", "passkey")
          .Add("checkpoint", loaded->step_dir)
          .Add("step", loaded->step)
          .Add("filler", filler_name)
          .Add("policy", r.policy)
          .Add("length", r.length)
          .Add("depth", depths[d])
          .Add("samples", c.samples)
          .Add("correct", c.correct)
          .Add("accuracy", static_cast<double>(c.correct) / n)
          .Add("kv_fraction", c.kv_fraction / n)
          .Add("kv_entries", c.kv_entries / n)
          .Add("budget", r.budget)
          .Add("budget_rule", r.budget_rule)
          .Add("prompt_tokens", c.prompt_tokens / n)
          .Add("max_new_tokens", max_new_tokens)
          .Add("seed", seed)
          .Add("seconds", c.seconds)
          .Add("threads", at::get_num_threads());
      if (json.is_open()) json << j.str() << "\n";
    }
    std::printf("%s %.2f | %.1f | %.4f |\n", line.c_str(), static_cast<double>(correct) / total,
                mean_entries(r), kv_fraction / total);
  }
  for (const auto& [length, m] : matched) {
    std::printf(
        "budget (match), length %lld: streaming and h2o keep %lld entries per KV head (at least 5 and 2), "
        "the NAtS "
        "cache's mean at the end of the prefill of the same prompts (%.1f per KV head, all layers)\n",
        static_cast<long long>(length), static_cast<long long>(m.first), m.second);
  }
  if (json.is_open()) {
    json.close();
    if (!json) {
      std::fprintf(stderr, "eval: --json %s: write failed\n", json_path.c_str());
      return 1;
    }
  }
  return 0;
}

}  // namespace

int RunEval(int argc, char** argv) {
  // The task picks the flag set, so it is read before the parse; the parse then checks it again.
  std::string task = "perplexity";
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--task" && i + 1 < argc) task = argv[i + 1];
    if (absl::StartsWith(arg, "--task=")) task = std::string(arg.substr(7));
  }
  if (task == "perplexity") return PerplexityWithFlags(argc, argv);
  if (task == "passkey") return PasskeyWithFlags(argc, argv);
  std::fprintf(stderr, "eval: --task=%s: allowed values are perplexity (the default) and passkey\n",
               task.c_str());
  return 2;
}

}  // namespace nats::launch
