// checkpoints/checkpoint_dir.h
//
// The directory of checkpoints and its commit protocol (DESIGN.md section 5, checkpoints/):
//
//   <root>/step_00001000/manifest.pb, rank_0.bin, rank_1.bin, ...   a complete checkpoint
//   <root>/step_00001200.partial/...                                 a save in progress (or a crashed one)
//   <root>/latest                                                    "step_00001000\n"
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
// treated as a checkpoint. All ranks must see <root> as one shared file system.
//
// `latest` is authoritative for FindLatestCheckpoint as long as it names a complete checkpoint (so that
// a deliberate rollback to an older step followed by new saves resumes from the new saves, not from the
// abandoned higher steps). When it is missing or stale (a crash between steps 4 and 5, a copied
// directory) the newest complete step_<N> is used instead.
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

// Step 3: writes `manifest` durably as <dir>/manifest.pb.
absl::Status WriteManifest(const std::string& dir, const Manifest& manifest);

// Step 4. Replaces an existing step_<N> atomically where the file system supports renameat2
// (RENAME_EXCHANGE); elsewhere moves it aside first (a crash in between then resumes from an older step).
absl::Status CommitStagingDir(const std::string& root, int64_t step);

// Step 5: <root>/latest names step_<N>.
absl::Status WriteLatest(const std::string& root, int64_t step);
// The step `latest` names; NotFound without the file, DataLoss when it cannot be parsed.
absl::StatusOr<int64_t> ReadLatest(const std::string& root);

// Reads and parses <step_dir>/manifest.pb and checks its format version (nothing else).
absl::StatusOr<Manifest> ReadManifest(const std::string& step_dir);

// Steps N with a <root>/step_<N>/manifest.pb, ascending (the manifest is not parsed). Empty when <root>
// does not exist.
absl::StatusOr<std::vector<int64_t>> ListCompleteSteps(const std::string& root);

// The step directory to resume from (see the header comment); NotFound naming <root> when there is none.
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
// `latest` names. Steps above protect_step (an abandoned timeline after a rollback) are neither counted
// nor deleted. A checkpoint is first renamed to step_<N>.deleting, so a half-deleted one never looks
// complete. Returns the deleted steps.
absl::StatusOr<std::vector<int64_t>> ApplyRetention(const std::string& root, const RetentionPolicy& policy,
                                                    int64_t protect_step);

}  // namespace nats::checkpoint
