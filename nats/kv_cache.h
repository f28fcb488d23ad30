// nats/kv_cache.h
//
// Inference KV caches (docs/method.md section 6) and the baseline eviction policies the paper compares
// against (section 8: StreamingLLM, H2O). One LayerKvCache per attention layer; a KvCache holds the stack.
//
// NAtS cache, per (batch row, KV head), with exact semantics (no lazy eviction, no window off-by-one):
//   - global store: every global token, append-only;
//   - local store: local tokens since the last global; dropped once a global has been processed (that
//     global's own query still sees them, later queries do not);
//   - sliding ring of the last W positions with a valid bit (= the token is sliding).
// A query at i sees the global and local stores, ring entries with j >= i - W and the valid bit, and the new
// tokens of its own step by the rule of section 3. Feeding a sequence in steps of any sizes gives the same
// attention outputs as one training-path call on the whole sequence with the same types.
// Globals and locals share one padded store ([B, H_kv, capacity, D], globals first, then locals) with ragged
// per-head counts; dropping the locals is a count reset, so nothing is scanned per step.
//
// Dense cache: the NAtS cache with every token global (dense layers, and the `dense` policy).
// StreamingLLM: the first `sink_tokens` positions plus the most recent ones, `budget` entries in total.
// H2O: the `budget - budget/2` entries with the largest accumulated attention plus the budget/2 most recent.
// Evicting caches keep keys at their original RoPE positions. A multi-token first step (prefill) runs full
// causal attention over the prompt and then keeps `budget` entries (H2O scores = the prompt's attention
// column sums); later multi-token steps run token by token, so decode from position 0 is the pure eviction
// policy.
//
// Shapes: q [B, H, x, D]; k, v [B, H_kv, x, D] of the x new tokens at positions tokens()..tokens()+x-1;
// types [B, H_kv, x] int (TokenType), read by NAtS caches only. Attend returns [B, H, x, D] and commits the
// tokens.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nats/attention.h"

namespace nats {

enum class CachePolicy {
  kNats = 0,       // NAtS stores in NAtS layers (types from the scorer), dense cache in dense layers
  kDense = 1,      // every layer keeps every token (the scorer is ignored)
  kStreaming = 2,  // StreamingLLM: sink tokens + recent window, in every layer
  kH2O = 3,        // heavy hitters by accumulated attention + recent window, in every layer
};

struct CachePolicyConfig {
  CachePolicy policy = CachePolicy::kNats;
  int64_t budget = 0;       // entries per (batch row, KV head) for kStreaming / kH2O
  int64_t sink_tokens = 4;  // kStreaming: leading positions always kept
};

// "nats" | "dense" | "streaming" | "h2o"; an error names the accepted values.
absl::StatusOr<CachePolicy> ParseCachePolicy(const std::string& name);
std::string CachePolicyName(CachePolicy policy);
// Checks the budget against the policy (StreamingLLM needs budget > sink_tokens, H2O budget >= 2); the
// message names `--budget`.
absl::Status ValidateCachePolicy(const CachePolicyConfig& config);

// Statistics of one layer after the last committed step (docs/method.md 6).
struct LayerCacheStats {
  at::Tensor kv_retained;       // [B, H_kv] int64: entries the next query can see (new token excluded)
  at::Tensor reference_count;   // [B, H_kv] int64: |G| + |L| + W (NAtS; equals kv_retained for other caches)
  int64_t tokens = 0;           // positions processed; kv_fraction = kv_retained / tokens
  int64_t bytes = 0;            // K/V bytes of the held entries (store entries + filled ring slots)
  int64_t peak_bytes = 0;       // maximum of `bytes` over the steps so far
  int64_t allocated_bytes = 0;  // K/V bytes of the buffers (padding and growth headroom included)
  int64_t dense_bytes = 0;      // K/V bytes a dense cache would hold for `tokens` positions
};

class LayerKvCache {
 public:
  virtual ~LayerKvCache() = default;
  // Attention of the new tokens over the cache and themselves; commits them. See the file comment for shapes.
  virtual at::Tensor Attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const at::Tensor& types) = 0;
  // Commits tokens without computing their attention outputs, as Attend would (benchmarks build long caches
  // from random K/V with it). NAtS and dense caches only; the eviction caches need attention scores and
  // refuse.
  virtual void Append(const at::Tensor& k, const at::Tensor& v, const at::Tensor& types);
  virtual LayerCacheStats Stats() const = 0;
  // Sorted positions a query at tokens() would see, for (batch row b, KV head h); tests compare it with the
  // rule.
  virtual std::vector<int64_t> RetainedPositions(int64_t b, int64_t h) const = 0;
  // Whether Attend reads `types` (the model then runs the scorer for this layer).
  virtual bool uses_types() const = 0;
  int64_t tokens() const { return tokens_; }

 protected:
  int64_t tokens_ = 0;
};

// Shape of one layer's cache.
struct LayerCacheShape {
  int64_t batch = 1, kv_heads = 1, head_dim = 1;
  // NAtS layers: attention.window is W; a first multi-token step (prefill) of a NAtS or dense cache runs the
  // training-path nats::Attention with these options, so its outputs are those of the model's forward.
  AttentionOptions attention;
  at::ScalarType dtype = at::kFloat;
  at::Device device = at::kCPU;
};

// The cache a layer gets under `policy`: nats_layer selects the NAtS stores under kNats.
std::unique_ptr<LayerKvCache> MakeLayerCache(const CachePolicyConfig& policy, bool nats_layer,
                                             const LayerCacheShape& shape);

// The NAtS cache (all_global = the dense cache). Exposed for tests and benchmarks that fill it directly.
std::unique_ptr<LayerKvCache> MakeNatsLayerCache(const LayerCacheShape& shape, bool all_global);

// Totals over the layers of a stack.
struct CacheSummary {
  int64_t tokens = 0;
  int64_t retained_entries = 0;   // sum over layers, batch rows, KV heads of kv_retained
  int64_t dense_entries = 0;      // the same for a dense cache (= layers * B * H_kv * tokens)
  int64_t reference_entries = 0;  // sum of |G| + |L| + W
  int64_t bytes = 0, peak_bytes = 0, allocated_bytes = 0, dense_bytes = 0;
  std::vector<double> layer_kv_fraction;  // per layer: mean over (b, h) of kv_retained / tokens
};

class KvCache {
 public:
  KvCache(CachePolicyConfig policy, std::vector<std::unique_ptr<LayerKvCache>> layers);
  int64_t tokens() const;
  int num_layers() const { return static_cast<int>(layers_.size()); }
  LayerKvCache& layer(int l) { return *layers_.at(l); }
  const LayerKvCache& layer(int l) const { return *layers_.at(l); }
  const CachePolicyConfig& policy() const { return policy_; }
  std::vector<LayerCacheStats> Stats() const;
  CacheSummary Summary() const;

 private:
  CachePolicyConfig policy_;
  std::vector<std::unique_ptr<LayerKvCache>> layers_;
};

}  // namespace nats
