// nats/gumbel_noise.h
//
// Counter-based Gumbel(0, 1) noise for the scorer's straight-through sampling (docs/method.md section 2).
// Every value is a pure function of (seed, layer, global sample index, KV head, position, option), so it does
// not depend on how the batch is cut up: data-parallel ranks, sequence-parallel chunks, micro-batches,
// resuming or resharding all see exactly the noise one process would draw for the same samples. No generator
// state is consumed, and a chunk costs O(chunk), not O(sequence).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace nats {

// Where a forward's noise comes from: batch row r of the forward is global training sample first_sample + r.
struct NoiseKey {
  uint64_t seed = 0;
  int64_t first_sample = 0;
};

// Gumbel(0, 1) noise [batch, heads, length, 3] for sequence positions begin .. begin + length - 1, in
// `dtype`.
at::Tensor CounterGumbel(const NoiseKey& key, int64_t layer, int64_t batch, int64_t heads, int64_t begin,
                         int64_t length, at::ScalarType dtype);

}  // namespace nats
