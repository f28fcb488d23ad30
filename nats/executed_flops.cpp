// The counter of nats/executed_flops.h.
#include "nats/executed_flops.h"

#include <atomic>

namespace nats {
namespace {

std::atomic<int64_t> g_executed_attention_flops{0};

}  // namespace

void AddExecutedAttentionFlops(int64_t flops) {
  g_executed_attention_flops.fetch_add(flops, std::memory_order_relaxed);
}

int64_t TakeExecutedAttentionFlops() {
  return g_executed_attention_flops.exchange(0, std::memory_order_relaxed);
}

}  // namespace nats
