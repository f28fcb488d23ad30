// runtime/generation.h
//
// Text generation with a KV cache (docs/method.md section 6): the prompt goes through Transformer::Prefill,
// then one token at a time is sampled and fed to Transformer::Decode. Sampling is temperature / top-k / top-p
// (nucleus) from a seeded std::mt19937_64, so a fixed seed gives the same tokens on a given build. Every user
// error comes back as a Status naming the flag of `nats generate` and the fix.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nats/kv_cache.h"
#include "nats/transformer.h"

namespace nats {

struct SamplingOptions {
  double temperature = 1.0;  // 0 = greedy (argmax)
  int64_t top_k = 0;         // keep the k most likely tokens; 0 = all
  double top_p = 1.0;        // keep the smallest most-likely set with probability mass >= top_p; 1 = all
  uint64_t seed = 0;
};

// temperature >= 0, top_k >= 0, 0 < top_p <= 1; messages name --temperature / --top_k / --top_p.
absl::Status ValidateSampling(const SamplingOptions& options);

class Sampler {
 public:
  explicit Sampler(const SamplingOptions& options);
  // Draws one id from logits [V] (any float dtype, any device).
  int64_t Sample(const at::Tensor& logits);

 private:
  SamplingOptions options_;
  std::mt19937_64 rng_;
};

struct GenerationOptions {
  int64_t max_tokens = 64;  // tokens to generate (fewer if stop_token comes first)
  SamplingOptions sampling;
  CachePolicyConfig policy;
  int64_t stop_token = -1;    // generation ends after this id is sampled; -1 = never
  int64_t max_positions = 0;  // prompt + generated tokens must fit; 0 = no limit
};

struct GenerationResult {
  std::vector<int64_t> tokens;  // generated ids, the prompt excluded
  double prefill_seconds = 0;
  double decode_seconds = 0;  // Decode calls and sampling after the prefill
  int64_t decode_steps = 0;   // Decode calls (generated tokens - 1, or fewer at a stop token)
  CacheSummary cache;         // the cache after the last step
};

// Generates from one prompt (batch 1). on_token, when given, is called with each id as soon as it is sampled
// (the command streams text from it).
absl::StatusOr<GenerationResult> Generate(Transformer& model, const std::vector<int64_t>& prompt,
                                          const GenerationOptions& options,
                                          const std::function<void(int64_t)>& on_token = {});

}  // namespace nats
