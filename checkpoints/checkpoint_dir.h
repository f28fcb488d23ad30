// checkpoints/checkpoint_dir.h
//
// The directory of checkpoints and its commit protocol (docs/architecture.md section 5, checkpoints/):
//
//   <root>/step_00001000/manifest.pb, rank_0.bin, rank_1.bin, ...   a complete checkpoint
//   <root>/step_00001200.partial/...                                 a save in progress (or a crashed one)
//   <root>/latest                                                    "step_00001000\n"
//   <root>/step_00001400.abandoned/...      a step given up by a rollback (kept, never resumed from by
//   itself)
//
// A save (runtime/checkpointing.cpp drives it; rank 0 does the directory work):
//   1. PrepareStagingDir: remove any stale step_<N>.partial, create it empty.
//   2. every rank writes and fsyncs its blob inside it (blob_file.h).
//   3. WriteManifest: manifest.pb.tmp, fsync, rename to manifest.pb, fsync the directory.
//   4. CommitStagingDir: rename step_<N>.partial to step_<N> (atomically swapping out an existing
//      step_<N>, e.g. when a resumed run saves the step it resumed from), fsync <root>.
//   5. WriteLatest (tmp + fsync + rename), then ApplyRetention.
// A kill -9 at any moment therefore leaves either no step_<N> (the previous checkpoints and `latest` are
// untouched; the .partial directory is garbage that the next save or retention removes), or a complete
// step_<N>. A directory named step_<N> without manifest.pb is never produced by a save and is never
// treated as a checkpoint. All ranks must see <root> as one shared file system. manifest.pb carries its
// own CRC-32C (checkpoints/manifest_file.h), so a damaged manifest is refused like a damaged blob.
//
// Which checkpoint a resume takes: the newest complete step_<N>, always. `latest` is written after every
// commit for people and tools, but it is never trusted over the directory listing: a kill between steps
// 4 and 5 leaves `latest` one save behind, and resuming from it would silently lose a step. A rollback is
// asked for explicitly (`nats train --resume_from=<step>`); the trainer then renames the newer steps to
// step_<N>.abandoned (AbandonStepsAfter) so that they stop being candidates without being destroyed.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "checkpoints/checkpoint.pb.h"

namespace nats::checkpoint {

// Bumped when the manifest's meaning or the blob layout changes; readers refuse other versions.
inline constexpr int kFormatVersion = 1;
inline constexpr char kManifestFileName[] = "manifest.pb";
inline constexpr char kLatestFileName[] = "latest";

// "step_00001000" (zero padded to 8 digits so that `ls` sorts; longer steps just grow).
std::string StepDirName(int64_t step);
std::string StepDirPath(const std::string& root, int64_t step);
std::string StagingDirPath(const std::string& root, int64_t step);

// Step 1: creates <root> if needed and an empty step_<N>.partial (removing a stale one). Returns its path.
absl::StatusOr<std::string> PrepareStagingDir(const std::string& root, int64_t step);

// Step 3: writes `manifest` durably as <dir>/manifest.pb (framed and checksummed, manifest_file.h).
absl::Status WriteManifest(const std::string& dir, const Manifest& manifest);

// Step 4. Replaces an existing step_<N> atomically where the file system supports renameat2
// (RENAME_EXCHANGE); elsewhere moves it aside first (a crash in between then resumes from an older step).
absl::Status CommitStagingDir(const std::string& root, int64_t step);

// Step 5: <root>/latest names step_<N>.
absl::Status WriteLatest(const std::string& root, int64_t step);
// The step `latest` names; NotFound without the file, DataLoss when it cannot be parsed.
absl::StatusOr<int64_t> ReadLatest(const std::string& root);

// Reads <step_dir>/manifest.pb, checks its checksum (framed files) and its format version (nothing else).
// DataLoss naming the file and the fix when it is damaged.
absl::StatusOr<Manifest> ReadManifest(const std::string& step_dir);

// Steps N with a <root>/step_<N>/manifest.pb, ascending (the manifest is not parsed). Empty when <root>
// does not exist.
absl::StatusOr<std::vector<int64_t>> ListCompleteSteps(const std::string& root);

// The step directory to resume from: the newest complete step (see the header comment). NotFound naming
// <root> when there is none; the newest step's manifest error (never an older step in its place) when
// that manifest is damaged, so that a resume does not go back in time without being asked to.
absl::StatusOr<std::string> FindLatestCheckpoint(const std::string& root);

// `path` is a step directory (has manifest.pb) or a checkpoint root (resolved with FindLatestCheckpoint).
// A step_<N>.partial directory is refused as an interrupted save.
absl::StatusOr<std::string> ResolveCheckpointPath(const std::string& path);

struct RetentionPolicy {
  int keep_last = 2;   // keep the newest keep_last complete checkpoints; <= 0 keeps all
  int keep_every = 0;  // also keep every step that is a multiple of keep_every; 0: none
};

// Deletes complete checkpoints the policy does not keep, plus leftovers of interrupted saves and
// deletions (*.partial, *.deleting). Never deletes `protect_step` (the one just written) or what
// `latest` names, nor step_<N>.abandoned directories (AbandonStepsAfter; the user's to delete). Steps
// above protect_step do not exist after a rollback (they were abandoned); should some appear (another
// job writing the same root) they are neither counted nor deleted. A checkpoint is first renamed to
// step_<N>.deleting, so a half-deleted one never looks complete. Returns the deleted steps.
absl::StatusOr<std::vector<int64_t>> ApplyRetention(const std::string& root, const RetentionPolicy& policy,
                                                    int64_t protect_step);

// A rollback to `step`: renames every complete step_<M>, M > step, to step_<M>.abandoned (or
// .abandoned<k> when that name is taken) and fsyncs <root>. Returns the new paths, ascending by step.
absl::StatusOr<std::vector<std::string>> AbandonStepsAfter(const std::string& root, int64_t step);

// `nats train --overwrite`: deletes every checkpoint under <root> (complete steps, leftovers of saves,
// abandoned steps) and `latest`; entries the checkpoint protocol does not name are left alone. Each step
// is renamed to .deleting first, so an interrupted overwrite never leaves a half-deleted step that looks
// complete. Returns the number of complete steps deleted.
absl::StatusOr<int> RemoveAllCheckpoints(const std::string& root);

}  // namespace nats::checkpoint
