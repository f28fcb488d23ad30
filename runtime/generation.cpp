// Sampling and the prefill + decode generation loop (runtime/generation.h).
#include "runtime/generation.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace nats {
namespace {

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

absl::Status ValidateSampling(const SamplingOptions& o) {
  if (!(o.temperature >= 0.0) || !std::isfinite(o.temperature)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--temperature must be >= 0 (0 = greedy), got ", o.temperature));
  }
  if (o.top_k < 0)
    return absl::InvalidArgumentError(absl::StrCat("--top_k must be >= 0 (0 = off), got ", o.top_k));
  if (!(o.top_p > 0.0 && o.top_p <= 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat("--top_p must be in (0, 1] (1 = off), got ", o.top_p));
  }
  return absl::OkStatus();
}

Sampler::Sampler(const SamplingOptions& options) : options_(options), rng_(options.seed) {}

int64_t Sampler::Sample(const at::Tensor& logits) {
  TORCH_CHECK(logits.dim() == 1 && logits.numel() > 0, "Sample expects logits [V], got ", logits.sizes());
  at::Tensor l = logits.detach().to(at::kCPU, at::kDouble).contiguous();
  const double* data = l.data_ptr<double>();
  const int64_t v = l.numel();
  if (options_.temperature == 0.0) return std::max_element(data, data + v) - data;

  // Candidates sorted by logit, descending (ties by id, so the order is deterministic).
  std::vector<int64_t> ids(v);
  std::iota(ids.begin(), ids.end(), 0);
  auto by_logit = [&](int64_t a, int64_t b) { return data[a] > data[b] || (data[a] == data[b] && a < b); };
  int64_t keep = options_.top_k > 0 ? std::min(options_.top_k, v) : v;
  if (keep < v || options_.top_p < 1.0) {
    std::partial_sort(ids.begin(), ids.begin() + keep, ids.end(), by_logit);
    ids.resize(keep);
  } else {
    std::swap(ids[0],
              ids[std::max_element(data, data + v) - data]);  // plain sampling needs no order, only a max
  }

  std::vector<double> prob(keep);
  const double top = data[ids[0]];
  double total = 0.0;
  for (int64_t i = 0; i < keep; ++i) total += prob[i] = std::exp((data[ids[i]] - top) / options_.temperature);
  if (options_.top_p < 1.0) {
    // Nucleus: the shortest prefix whose mass reaches top_p (at least one token).
    double mass = 0.0;
    int64_t n = 0;
    while (n < keep && mass < options_.top_p * total) mass += prob[n++];
    keep = std::max<int64_t>(n, 1);
    prob.resize(keep);
    total = std::accumulate(prob.begin(), prob.end(), 0.0);
  }
  const double u = std::uniform_real_distribution<double>(0.0, total)(rng_);
  double acc = 0.0;
  for (int64_t i = 0; i < keep; ++i) {
    acc += prob[i];
    if (u < acc) return ids[i];
  }
  return ids[keep - 1];  // u == total after rounding
}

absl::StatusOr<GenerationResult> Generate(Transformer& model, const std::vector<int64_t>& prompt,
                                          const GenerationOptions& options,
                                          const std::function<void(int64_t)>& on_token) {
  if (prompt.empty()) {
    return absl::InvalidArgumentError("--prompt is empty (no tokens); give some text to continue");
  }
  if (options.max_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrCat("--max_tokens must be >= 0, got ", options.max_tokens));
  }
  if (options.max_positions > 0 &&
      static_cast<int64_t>(prompt.size()) + options.max_tokens > options.max_positions) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the prompt (", prompt.size(), " tokens) plus --max_tokens ", options.max_tokens, " exceeds ",
        options.max_positions,
        " positions (--max_context); shorten --prompt, lower --max_tokens or raise --max_context"));
  }
  if (absl::Status s = ValidateSampling(options.sampling); !s.ok()) return s;
  if (absl::Status s = ValidateCachePolicy(options.policy); !s.ok()) return s;
  const int64_t vocab = model->spec().model.vocab_size();
  for (int64_t id : prompt) {
    if (id < 0 || id >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat("prompt token id ", id,
                                                     " is outside the model's vocabulary [0, ", vocab,
                                                     "); the tokenizer does not match model.vocab_size"));
    }
  }

  const bool was_training = model->is_training();
  model->eval();
  torch::NoGradGuard no_grad;
  GenerationResult result;
  Sampler sampler(options.sampling);
  auto cache = model->NewCache(options.policy, /*batch=*/1);
  const at::Device device = model->parameters().front().device();

  auto start = std::chrono::steady_clock::now();
  at::Tensor logits;
  if (options.max_tokens > 0) {
    logits = model->Prefill(torch::tensor(prompt, torch::kLong).view({1, -1}).to(device), *cache);
  }
  result.prefill_seconds = SecondsSince(start);
  start = std::chrono::steady_clock::now();
  for (int64_t n = 0; n < options.max_tokens; ++n) {
    const int64_t id = sampler.Sample(logits[0]);
    result.tokens.push_back(id);
    if (on_token) on_token(id);
    if (id == options.stop_token || n + 1 == options.max_tokens) break;
    logits = model->Decode(torch::full({1, 1}, id, torch::kLong).to(device), *cache);
    ++result.decode_steps;
  }
  result.decode_seconds = SecondsSince(start);
  result.cache = cache->Summary();
  model->train(was_training);
  return result;
}

}  // namespace nats
