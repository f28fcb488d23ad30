// checkpoints/crash_point.h
//
// Named points in the save sequence where a test may kill the process (fault injection). Production
// code calls CrashPoint("name") between durable steps; without a hook it costs one load of a pointer.
// Tests install a hook in a forked child that raises SIGKILL at one point, then check in the parent
// that the previous checkpoint is still the newest complete one (tests/checkpoints/crash_test.cpp).
//
// The points, in save order (runtime/checkpointing.cpp and checkpoint_dir.cpp):
//   "staging_ready", "blob_slice_written" (after every slice), "blob_synced", "manifest_tmp_written",
//   "manifest_written", "step_dir_renamed", "latest_tmp_written", "latest_written",
//   "retention_deleting" (after each deleted checkpoint).
#pragma once

#include "absl/strings/string_view.h"

namespace nats::checkpoint {

using CrashPointHook = void (*)(absl::string_view point);

// Not thread safe against concurrent saves; install before saving. nullptr removes the hook.
void SetCrashPointHookForTesting(CrashPointHook hook);

void CrashPoint(absl::string_view point);

}  // namespace nats::checkpoint
