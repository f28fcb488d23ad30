// checkpoints/crash_point.h
//
// Fault injection into the save sequence. Production code calls CrashPoint("name") between durable
// steps and asks WriteAllowance before every write of checkpoint bytes; without a hook each costs one
// atomic load. Tests install a hook in a forked child that raises SIGKILL at one point, then check in
// the parent that the previous checkpoint is still the newest complete one
// (tests/checkpoints/crash_test.cpp); `nats train` installs them from the environment
// (NATS_CRASH_POINT, NATS_FAULT_ENOSPC_AFTER_BYTES: launch/train_command.cpp,
// tests/runtime/kill_resume_test.sh).
//
// The points, in save order (runtime/checkpointing.cpp and checkpoint_dir.cpp):
//   "staging_ready", "blob_slice_written" (after every slice), "blob_synced", "manifest_tmp_written",
//   "manifest_written", "step_dir_renamed", "latest_tmp_written", "latest_written",
//   "retention_deleting" (after each deleted checkpoint).
#pragma once

#include <cstdint>

#include "absl/strings/string_view.h"

namespace nats::checkpoint {

// Every point above (so that a hook installed by name can refuse a misspelt one).
inline constexpr const char* kCrashPointNames[] = {
    "staging_ready",    "blob_slice_written", "blob_synced",    "manifest_tmp_written", "manifest_written",
    "step_dir_renamed", "latest_tmp_written", "latest_written", "retention_deleting",
};

using CrashPointHook = void (*)(absl::string_view point);

// Not thread safe against concurrent saves; install before saving. nullptr removes the hook.
void SetCrashPointHookForTesting(CrashPointHook hook);

void CrashPoint(absl::string_view point);

// Disk-full injection: after `bytes` more bytes of checkpoint files (blobs, manifests, `latest`) have
// been written by this process, the next write fails with ENOSPC, once; then the fault disarms, as if
// space had been freed. Negative: disarmed (the default).
void SetWriteFaultForTesting(int64_t bytes);

// How many bytes of a write of `bytes` may go ahead: `bytes` when no fault is armed; fewer when the
// budget ends inside it (a short write, as a full disk gives); 0 means fail this write with ENOSPC.
uint64_t WriteAllowance(uint64_t bytes);

}  // namespace nats::checkpoint
