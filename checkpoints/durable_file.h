// checkpoints/durable_file.h
//
// POSIX file operations with the durability a checkpoint needs: after WriteFileDurably returns OK the
// file has its full new content or (after a crash at any earlier moment) its full old content, never a
// mix, and the rename itself survives a power loss (the parent directory is fsynced). Errors name the
// path and the errno text.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace nats::checkpoint {

// Writes `path`.tmp, fsyncs it, renames it over `path`, fsyncs the directory. `crash_point_prefix`
// (e.g. "manifest") names the crash points "<prefix>_tmp_written" and "<prefix>_written".
absl::Status WriteFileDurably(const std::string& path, absl::string_view bytes,
                              absl::string_view crash_point_prefix);

// fsync of a directory: makes the creation, rename or deletion of its entries durable.
absl::Status FsyncDirectory(const std::string& dir);

absl::StatusOr<std::string> ReadFileToString(const std::string& path);

// rm -rf; OK when `path` does not exist.
absl::Status RemoveTree(const std::string& path);

// "No such file or directory" etc. for errno values, as "<what> <path>: <text>".
absl::Status ErrnoStatus(absl::string_view what, const std::string& path, int err);

}  // namespace nats::checkpoint
