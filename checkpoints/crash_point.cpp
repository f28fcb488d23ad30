#include "checkpoints/crash_point.h"

#include <algorithm>
#include <atomic>

namespace nats::checkpoint {
namespace {
std::atomic<CrashPointHook> g_hook{nullptr};
std::atomic<int64_t> g_write_budget{-1};  // bytes left before the injected ENOSPC; -1: disarmed
}  // namespace

void SetCrashPointHookForTesting(CrashPointHook hook) { g_hook.store(hook); }

void CrashPoint(absl::string_view point) {
  if (CrashPointHook hook = g_hook.load(std::memory_order_relaxed)) hook(point);
}

void SetWriteFaultForTesting(int64_t bytes) { g_write_budget.store(bytes < 0 ? -1 : bytes); }

uint64_t WriteAllowance(uint64_t bytes) {
  int64_t budget = g_write_budget.load(std::memory_order_relaxed);
  if (budget < 0 || bytes == 0) return bytes;
  if (budget == 0) {
    g_write_budget.store(-1);  // this write fails; the next ones succeed
    return 0;
  }
  const uint64_t allowed = std::min<uint64_t>(bytes, static_cast<uint64_t>(budget));
  g_write_budget.store(budget - static_cast<int64_t>(allowed));
  return allowed;
}

}  // namespace nats::checkpoint
