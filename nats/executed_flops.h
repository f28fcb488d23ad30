// nats/executed_flops.h
//
// A process-wide counter of the floating-point operations the attention kernels actually executed (2 per
// multiply-add of every tile product they ran, forward and backward), so that MFU can be reported both for
// what a dense model would need ("dense-equivalent", the analytic 6N + attention count of
// Transformer::FlopsPerToken) and for what ran ("executed"): a NAtS layer skips the keys no query sees, a
// dense layer through the blocked kernel skips the upper triangle. The fused kernel and the dense reference
// path add to it; the trainer takes (reads and resets) it once per step. Thread-safe (relaxed atomics: the
// count is read only after the step's threads have joined).
#pragma once

#include <cstdint>

namespace nats {

// Adds `flops` to the counter.
void AddExecutedAttentionFlops(int64_t flops);

// Returns the count since the last call and resets it to zero.
int64_t TakeExecutedAttentionFlops();

}  // namespace nats
