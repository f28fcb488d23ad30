// nats/cached_perplexity.h
//
// Perplexity of a model on token sequences, computed two ways (docs/method.md sections 6 and 8):
//   - by one eval-mode forward over the whole sequence (the training-path attention with argmax types);
//   - by a prefill and then token-by-token decode through a KV cache under a CachePolicy.
// Under the `nats` and `dense` policies the two agree to float tolerance (the cache is exact); for
// StreamingLLM and H2O only the decode path is meaningful (their forward would be full attention). Both also
// report the per-layer KV fraction, so an evaluation can put perplexity next to cache size as the paper does.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "nats/kv_cache.h"
#include "nats/transformer.h"

namespace nats {

struct PerplexityResult {
  double loss = 0;        // mean token cross-entropy (nats) over the predicted tokens
  double perplexity = 0;  // exp(loss)
  int64_t predicted = 0;  // number of predicted tokens (B * (T - 1))
  // Per layer: mean over (batch row, KV head) and over the scored positions i of kv_retained(i) / (i + 1),
  // where kv_retained(i) is what a query after position i could see. Forward: the value after the whole
  // sequence.
  std::vector<double> layer_kv_fraction;
  double kv_fraction = 0;            // mean of layer_kv_fraction
  double reference_kv_fraction = 0;  // the same with the reference count |G| + |L| + W (decode path only)
  // Decode path: mean over layers, (batch row, KV head) and the scored positions of kv_retained(i) itself, in
  // entries per KV head (what a StreamingLLM / H2O budget is measured in).
  double kv_entries = 0;
  int64_t peak_cache_bytes = 0;   // decode path: the cache's peak bytes, all layers
  int64_t dense_cache_bytes = 0;  // decode path: a dense cache for the same sequence
};

// Eval-mode forward of tokens[:, :-1] scored against tokens[:, 1:]. tokens: [B, T] int64, T >= 2. The model's
// training flag is restored afterwards.
PerplexityResult PerplexityByForward(Transformer& model, const at::Tensor& tokens);

// Prefills tokens[:, :prefill] (1 <= prefill < T), then decodes one token at a time up to T - 1; every
// prediction of tokens[:, 1:] is scored (the prefill's from its all-position logits). KV fractions average
// over the decode steps (the prefill's last position included).
PerplexityResult PerplexityByDecode(Transformer& model, const at::Tensor& tokens,
                                    const CachePolicyConfig& policy, int64_t prefill = 1);

// The StreamingLLM / H2O budget whose cache holds on average `mean_entries` entries per KV head over the
// positions PerplexityByDecode(tokens [B, t], prefill) scores: an evicting cache of budget B holds min(n, B)
// entries after n tokens, n = prefill .. t - 1. Returns the B in [1, t - 1] whose average is closest (the
// smaller on a tie), so that an eviction baseline can be run "at the NAtS cache size" measured by
// PerplexityResult::kv_entries.
int64_t BudgetForMeanEntries(double mean_entries, int64_t t, int64_t prefill = 1);

}  // namespace nats
