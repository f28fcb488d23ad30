#include "checkpoints/checkpoint_dir.h"

#include <fcntl.h>
#include <stdio.h>  // renameat2, RENAME_EXCHANGE (glibc >= 2.28 with _GNU_SOURCE)
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <set>
#include <system_error>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "checkpoints/crash_point.h"
#include "checkpoints/durable_file.h"
#include "checkpoints/manifest_file.h"

namespace nats::checkpoint {
namespace {

namespace fs = std::filesystem;

constexpr char kStepPrefix[] = "step_";
constexpr char kStagingSuffix[] = ".partial";
constexpr char kDeletingSuffix[] = ".deleting";
constexpr char kAbandonedSuffix[] = ".abandoned";

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

bool IsDirectory(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// "step_<digits>" -> step; anything else (suffixes included) -> -1.
int64_t ParseStepDirName(absl::string_view name) {
  if (!absl::ConsumePrefix(&name, kStepPrefix) || name.empty()) return -1;
  for (char c : name) {
    if (c < '0' || c > '9') return -1;
  }
  int64_t step = -1;
  return absl::SimpleAtoi(name, &step) ? step : -1;
}

bool IsSaveLeftover(absl::string_view name) {
  return absl::StartsWith(name, kStepPrefix) &&
         (absl::EndsWith(name, kStagingSuffix) || absl::EndsWith(name, kDeletingSuffix));
}

}  // namespace

std::string StepDirName(int64_t step) { return absl::StrFormat("%s%08d", kStepPrefix, step); }

std::string StepDirPath(const std::string& root, int64_t step) {
  return absl::StrCat(root, "/", StepDirName(step));
}

std::string StagingDirPath(const std::string& root, int64_t step) {
  return absl::StrCat(StepDirPath(root, step), kStagingSuffix);
}

absl::StatusOr<std::string> PrepareStagingDir(const std::string& root, int64_t step) {
  std::error_code ec;
  const bool created_root = fs::create_directories(root, ec);
  if (ec) return ErrnoStatus("cannot create checkpoint directory", root, ec.value());
  if (created_root) {
    const std::string parent = fs::path(root).parent_path().string();
    if (absl::Status s = FsyncDirectory(parent.empty() ? "." : parent); !s.ok()) return s;
  }
  const std::string staging = StagingDirPath(root, step);
  if (absl::Status s = RemoveTree(staging); !s.ok()) return s;
  if (::mkdir(staging.c_str(), 0755) != 0) return ErrnoStatus("cannot create", staging, errno);
  if (absl::Status s = FsyncDirectory(root); !s.ok()) return s;
  CrashPoint("staging_ready");
  return staging;
}

absl::Status WriteManifest(const std::string& dir, const Manifest& manifest) {
  absl::StatusOr<std::string> bytes = EncodeManifestFile(manifest);
  if (!bytes.ok()) return absl::InternalError(absl::StrCat(dir, ": ", bytes.status().message()));
  return WriteFileDurably(absl::StrCat(dir, "/", kManifestFileName), *bytes, "manifest");
}

absl::Status CommitStagingDir(const std::string& root, int64_t step) {
  const std::string staging = StagingDirPath(root, step);
  const std::string final_dir = StepDirPath(root, step);
  if (::rename(staging.c_str(), final_dir.c_str()) != 0) {
    if (errno != ENOTEMPTY && errno != EEXIST) {
      return ErrnoStatus(absl::StrCat("cannot rename ", staging, " to"), final_dir, errno);
    }
    // step_<N> exists with content. Swap the two atomically so that some complete step_<N> exists at
    // every moment; the old one then sits at the staging name and is removed below.
    if (::renameat2(AT_FDCWD, staging.c_str(), AT_FDCWD, final_dir.c_str(), RENAME_EXCHANGE) != 0) {
      if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP) {
        return ErrnoStatus(absl::StrCat("cannot exchange ", staging, " with"), final_dir, errno);
      }
      // No RENAME_EXCHANGE on this file system: move the old one aside first.
      const std::string aside = absl::StrCat(final_dir, kDeletingSuffix);
      if (absl::Status s = RemoveTree(aside); !s.ok()) return s;
      if (::rename(final_dir.c_str(), aside.c_str()) != 0) {
        return ErrnoStatus(absl::StrCat("cannot rename ", final_dir, " to"), aside, errno);
      }
      if (::rename(staging.c_str(), final_dir.c_str()) != 0) {
        return ErrnoStatus(absl::StrCat("cannot rename ", staging, " to"), final_dir, errno);
      }
      if (absl::Status s = FsyncDirectory(root); !s.ok()) return s;
      CrashPoint("step_dir_renamed");
      return RemoveTree(aside);
    }
    if (absl::Status s = FsyncDirectory(root); !s.ok()) return s;
    CrashPoint("step_dir_renamed");
    return RemoveTree(staging);
  }
  if (absl::Status s = FsyncDirectory(root); !s.ok()) return s;
  CrashPoint("step_dir_renamed");
  return absl::OkStatus();
}

absl::Status WriteLatest(const std::string& root, int64_t step) {
  return WriteFileDurably(absl::StrCat(root, "/", kLatestFileName), absl::StrCat(StepDirName(step), "\n"),
                          "latest");
}

absl::StatusOr<int64_t> ReadLatest(const std::string& root) {
  const std::string path = absl::StrCat(root, "/", kLatestFileName);
  absl::StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok()) return text.status();
  const int64_t step = ParseStepDirName(absl::StripAsciiWhitespace(*text));
  if (step < 0) {
    return absl::DataLossError(
        absl::StrCat(path,
                     ": expected one line \"step_<N>\"; delete the file to resume from "
                     "the newest complete checkpoint"));
  }
  return step;
}

absl::StatusOr<Manifest> ReadManifest(const std::string& step_dir) {
  const std::string path = absl::StrCat(step_dir, "/", kManifestFileName);
  absl::StatusOr<std::string> bytes = ReadFileToString(path);
  if (!bytes.ok()) {
    if (absl::IsNotFound(bytes.status())) {
      return absl::NotFoundError(absl::StrCat(step_dir, " is not a complete checkpoint (no ",
                                              kManifestFileName,
                                              "): the save was interrupted; use an older step"));
    }
    return bytes.status();
  }
  absl::StatusOr<Manifest> decoded = DecodeManifestFile(*bytes, path);
  if (!decoded.ok()) return decoded.status();
  Manifest& manifest = *decoded;
  if (manifest.format_version() != kFormatVersion) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, ": checkpoint format version ", manifest.format_version(),
                     ", this build reads version ", kFormatVersion, "; use the nats build that wrote it"));
  }
  return manifest;
}

absl::StatusOr<std::vector<int64_t>> ListCompleteSteps(const std::string& root) {
  std::vector<int64_t> steps;
  if (!IsDirectory(root)) return steps;
  std::error_code ec;
  for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    const int64_t step = ParseStepDirName(it->path().filename().string());
    if (step >= 0 && Exists(absl::StrCat(it->path().string(), "/", kManifestFileName))) steps.push_back(step);
  }
  if (ec) return ErrnoStatus("cannot list checkpoint directory", root, ec.value());
  std::sort(steps.begin(), steps.end());
  return steps;
}

absl::StatusOr<std::string> FindLatestCheckpoint(const std::string& root) {
  absl::StatusOr<std::vector<int64_t>> steps = ListCompleteSteps(root);
  if (!steps.ok()) return steps.status();
  if (!steps->empty()) {
    // Not `latest`: it lags the listing by one save after a kill between commit and pointer update.
    const std::string dir = StepDirPath(root, steps->back());
    absl::StatusOr<Manifest> manifest = ReadManifest(dir);
    if (!manifest.ok()) return manifest.status();
    return dir;
  }
  return absl::NotFoundError(absl::StrCat("no complete checkpoint in ", root,
                                          " (no step_<N>/manifest.pb); start without resuming or name a "
                                          "checkpoint directory"));
}

absl::StatusOr<std::string> ResolveCheckpointPath(const std::string& path) {
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  if (Exists(absl::StrCat(p, "/", kManifestFileName))) {
    if (absl::EndsWith(p, kStagingSuffix)) {
      return absl::FailedPreconditionError(absl::StrCat(
          p, " is an interrupted save (the commit rename never happened); use a step_<N> directory"));
    }
    return p;
  }
  if (!IsDirectory(p)) return absl::NotFoundError(absl::StrCat(p, ": no such checkpoint directory"));
  const std::string name = fs::path(p).filename().string();
  if (ParseStepDirName(name) >= 0 || IsSaveLeftover(name)) {
    return absl::NotFoundError(absl::StrCat(p, " is not a complete checkpoint (no ", kManifestFileName,
                                            "): the save was interrupted; use an older step"));
  }
  return FindLatestCheckpoint(p);
}

absl::StatusOr<std::vector<int64_t>> ApplyRetention(const std::string& root, const RetentionPolicy& policy,
                                                    int64_t protect_step) {
  std::vector<int64_t> deleted;
  absl::StatusOr<std::vector<int64_t>> steps = ListCompleteSteps(root);
  if (!steps.ok()) return steps.status();

  // Leftovers of interrupted saves and deletions first: they hold disk space and are never checkpoints.
  std::error_code ec;
  std::vector<std::string> leftovers;
  for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    if (IsSaveLeftover(it->path().filename().string())) leftovers.push_back(it->path().string());
  }
  if (ec) return ErrnoStatus("cannot list checkpoint directory", root, ec.value());
  for (const std::string& path : leftovers) {
    if (absl::Status s = RemoveTree(path); !s.ok()) return s;
  }

  if (policy.keep_last <= 0) return deleted;
  std::set<int64_t> keep = {protect_step};
  if (absl::StatusOr<int64_t> latest = ReadLatest(root); latest.ok()) keep.insert(*latest);
  int kept_newest = 0;
  for (auto it = steps->rbegin(); it != steps->rend(); ++it) {
    const int64_t step = *it;
    if (step > protect_step) {
      keep.insert(step);  // an abandoned timeline: not ours to judge
      continue;
    }
    if (kept_newest < policy.keep_last) {
      keep.insert(step);
      ++kept_newest;
    }
    if (policy.keep_every > 0 && step % policy.keep_every == 0) keep.insert(step);
  }
  for (const int64_t step : *steps) {
    if (keep.count(step)) continue;
    const std::string dir = StepDirPath(root, step);
    const std::string doomed = absl::StrCat(dir, kDeletingSuffix);
    if (::rename(dir.c_str(), doomed.c_str()) != 0) {
      return ErrnoStatus(absl::StrCat("cannot rename ", dir, " to"), doomed, errno);
    }
    if (absl::Status s = FsyncDirectory(root); !s.ok()) return s;
    CrashPoint("retention_deleting");
    if (absl::Status s = RemoveTree(doomed); !s.ok()) return s;
    deleted.push_back(step);
  }
  return deleted;
}

absl::StatusOr<std::vector<std::string>> AbandonStepsAfter(const std::string& root, int64_t step) {
  std::vector<std::string> moved;
  absl::StatusOr<std::vector<int64_t>> steps = ListCompleteSteps(root);
  if (!steps.ok()) return steps.status();
  // Newest first: an interrupted rollback leaves the steps closest to the rollback point as candidates.
  for (auto it = steps->rbegin(); it != steps->rend() && *it > step; ++it) {
    const std::string dir = StepDirPath(root, *it);
    std::string target = absl::StrCat(dir, kAbandonedSuffix);
    for (int k = 2; Exists(target); ++k) target = absl::StrCat(dir, kAbandonedSuffix, k);
    if (::rename(dir.c_str(), target.c_str()) != 0) {
      return ErrnoStatus(absl::StrCat("cannot rename ", dir, " to"), target, errno);
    }
    moved.push_back(target);
  }
  std::reverse(moved.begin(), moved.end());
  if (!moved.empty()) {
    if (absl::Status s = FsyncDirectory(root); !s.ok()) return s;
  }
  return moved;
}

absl::StatusOr<int> RemoveAllCheckpoints(const std::string& root) {
  if (!IsDirectory(root)) return 0;
  absl::StatusOr<std::vector<int64_t>> steps = ListCompleteSteps(root);
  if (!steps.ok()) return steps.status();
  // Newest first: an interrupted overwrite leaves the oldest steps, never a newest one that looks like
  // the run to resume from while older state is gone.
  for (auto it = steps->rbegin(); it != steps->rend(); ++it) {
    const std::string dir = StepDirPath(root, *it);
    const std::string doomed = absl::StrCat(dir, kDeletingSuffix);
    if (absl::Status s = RemoveTree(doomed); !s.ok()) return s;
    if (::rename(dir.c_str(), doomed.c_str()) != 0) {
      return ErrnoStatus(absl::StrCat("cannot rename ", dir, " to"), doomed, errno);
    }
    if (absl::Status s = FsyncDirectory(root); !s.ok()) return s;
    if (absl::Status s = RemoveTree(doomed); !s.ok()) return s;
  }
  std::error_code ec;
  std::vector<std::string> rest;
  for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (IsSaveLeftover(name) ||
        (absl::StartsWith(name, kStepPrefix) && absl::StrContains(name, kAbandonedSuffix)) ||
        name == kLatestFileName || name == absl::StrCat(kLatestFileName, ".tmp")) {
      rest.push_back(it->path().string());
    }
  }
  if (ec) return ErrnoStatus("cannot list checkpoint directory", root, ec.value());
  for (const std::string& path : rest) {
    if (absl::Status s = RemoveTree(path); !s.ok()) return s;
  }
  if (absl::Status s = FsyncDirectory(root); !s.ok()) return s;
  return static_cast<int>(steps->size());
}

}  // namespace nats::checkpoint
