#include "checkpoints/crash_point.h"

#include <atomic>

namespace nats::checkpoint {
namespace {
std::atomic<CrashPointHook> g_hook{nullptr};
}  // namespace

void SetCrashPointHookForTesting(CrashPointHook hook) { g_hook.store(hook); }

void CrashPoint(absl::string_view point) {
  if (CrashPointHook hook = g_hook.load(std::memory_order_relaxed)) hook(point);
}

}  // namespace nats::checkpoint
