// `nats inspect CHECKPOINT_DIR_OR_STEP_DIR`: what a checkpoint holds and whether its bytes are intact.
// Prints the step, loader cursor, world layout, blobs, tensors (dtype, shape, bytes, slices) and the
// saved config; then reads every slice and checks its CRC (skip with --no_verify). Exit code 0 when the
// checkpoint is complete and intact, 1 when it is damaged or unreadable (each problem is named), 2 for
// usage errors.
#include <google/protobuf/text_format.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "checkpoints/checkpoint_dir.h"
#include "checkpoints/checkpoint_reader.h"
#include "checkpoints/dtype.h"
#include "data/human_units.h"
#include "launch/flag_parser.h"

namespace nats::launch {
namespace {

constexpr char kUsage[] =
    "usage: nats inspect CHECKPOINT_DIR_OR_STEP_DIR [--no_verify] [--slices] [--no_config]\n"
    "  A checkpoint root resolves to its latest complete step.\n"
    "  --no_verify  skip reading every slice and checking its CRC-32C\n"
    "  --slices     list every slice (writer rank, file, offsets, CRC)\n"
    "  --no_config  do not print the saved config\n";

// "0-3" / "0,2,5": the ranks that wrote a tensor's slices.
std::string RankList(const std::set<int>& ranks) {
  if (ranks.empty()) return "-";
  const int lo = *ranks.begin(), hi = *ranks.rbegin();
  if (static_cast<int>(ranks.size()) == hi - lo + 1 && ranks.size() > 2) return absl::StrCat(lo, "-", hi);
  return absl::StrJoin(ranks, ",");
}

void PrintSummary(const std::string& root, const std::string& step_dir, const checkpoint::Manifest& m,
                  bool list_slices, bool print_config) {
  std::printf("checkpoint  %s\n", step_dir.c_str());
  std::printf("format      version %d, created %s\n", m.format_version(),
              m.has_created_unix_seconds()
                  ? absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", absl::FromUnixSeconds(m.created_unix_seconds()),
                                     absl::UTCTimeZone())
                        .c_str()
                  : "(unknown)");
  std::printf("step        %lld\n", static_cast<long long>(m.step()));
  std::printf("consumed    %lld samples", static_cast<long long>(m.consumed_samples()));
  if (m.has_consumed_tokens()) std::printf(", %lld tokens", static_cast<long long>(m.consumed_tokens()));
  std::printf("\n");
  if (m.has_elapsed_seconds()) std::printf("elapsed     %.1f s of training\n", m.elapsed_seconds());
  std::printf("world       %d ranks (dp %d, sp %d, zero stage %d)\n", m.world_size(), m.dp(), m.sp(),
              m.zero_stage());
  uint64_t blob_bytes = 0;
  std::vector<std::string> blobs;
  for (const auto& b : m.blobs()) {
    blob_bytes += b.bytes();
    blobs.push_back(absl::StrCat(b.file(), " ", data::FormatBytes(static_cast<double>(b.bytes()))));
  }
  std::printf("blobs       %d files, %s: %s\n", m.blobs_size(),
              data::FormatBytes(static_cast<double>(blob_bytes)).c_str(), absl::StrJoin(blobs, ", ").c_str());
  int rng = 0;
  for (const auto& rs : m.rank_states()) rng += rs.rng_state().empty() ? 0 : 1;
  std::printf("rng         %d of %d ranks saved a generator state\n", rng, m.rank_states_size());
  if (m.history_size() > 0) {
    const auto& last = m.history(m.history_size() - 1);
    std::printf("history     %d points, last: step %lld loss %.4f", m.history_size(),
                static_cast<long long>(last.step()), last.loss());
    if (last.has_val_loss()) std::printf(" val_loss %.4f", last.val_loss());
    std::printf("\n");
  }
  if (!root.empty()) {
    absl::StatusOr<std::vector<int64_t>> steps = checkpoint::ListCompleteSteps(root);
    absl::StatusOr<int64_t> latest = checkpoint::ReadLatest(root);
    if (steps.ok()) {
      std::vector<std::string> names;
      for (int64_t s : *steps) {
        names.push_back(absl::StrCat(s, latest.ok() && *latest == s ? " (latest)" : ""));
      }
      std::printf("root        %s: complete steps %s\n", root.c_str(), absl::StrJoin(names, ", ").c_str());
    }
  }

  uint64_t tensor_bytes = 0;
  size_t width = 4;
  for (const auto& t : m.tensors()) width = std::max(width, t.name().size());
  std::printf("tensors     %d\n", m.tensors_size());
  std::printf("  %-*s  %-8s  %-16s  %10s  %s\n", static_cast<int>(width), "name", "dtype", "shape", "bytes",
              "slices (writer ranks)");
  for (const auto& t : m.tensors()) {
    uint64_t bytes = 0;
    std::set<int> ranks;
    for (const auto& s : t.slices()) {
      bytes += s.bytes();
      ranks.insert(s.rank());
    }
    tensor_bytes += bytes;
    std::printf("  %-*s  %-8s  %-16s  %10s  %d (%s)\n", static_cast<int>(width), t.name().c_str(),
                checkpoint::DTypeName(t.dtype()).c_str(),
                checkpoint::ShapeString(at::IntArrayRef(t.shape().data(), t.shape_size())).c_str(),
                data::FormatBytes(static_cast<double>(bytes)).c_str(), t.slices_size(),
                RankList(ranks).c_str());
    if (list_slices) {
      for (const auto& s : t.slices()) {
        std::printf("      [%llu, %llu) rank %d %s @%llu %llu bytes crc32c %08x\n",
                    static_cast<unsigned long long>(s.global_offset()),
                    static_cast<unsigned long long>(s.global_offset() + s.numel()), s.rank(),
                    s.file().c_str(), static_cast<unsigned long long>(s.file_offset()),
                    static_cast<unsigned long long>(s.bytes()), s.crc32c());
      }
    }
  }
  std::printf("  total %s in tensors\n", data::FormatBytes(static_cast<double>(tensor_bytes)).c_str());
  if (print_config && m.has_config()) {
    std::string text;
    google::protobuf::TextFormat::PrintToString(m.config(), &text);
    std::printf("config:\n");
    for (const auto& line : absl::StrSplit(text, '\n')) {
      if (!line.empty()) std::printf("  %s\n", std::string(line).c_str());
    }
  }
  std::fflush(stdout);
}

}  // namespace

int RunInspect(int argc, char** argv) {
  ParsedFlags flags;
  if (auto exit_code = ParseCommandFlags(argc, argv, {}, {"no_verify", "slices", "no_config"}, kUsage, &flags,
                                         /*allow_positional=*/true))
    return *exit_code;
  if (flags.positional.size() != 1) {
    std::fprintf(stderr, "inspect: give exactly one checkpoint root or step directory (got %zu)\n%s",
                 flags.positional.size(), kUsage);
    return 2;
  }
  const std::string path = flags.positional[0];
  absl::StatusOr<std::string> step_dir = checkpoint::ResolveCheckpointPath(path);
  if (!step_dir.ok()) {
    std::fprintf(stderr, "nats inspect: %s\n", std::string(step_dir.status().message()).c_str());
    return 1;
  }
  absl::StatusOr<std::unique_ptr<checkpoint::CheckpointReader>> reader =
      checkpoint::CheckpointReader::Open(*step_dir);
  if (!reader.ok()) {
    std::fprintf(stderr, "nats inspect: %s\n", std::string(reader.status().message()).c_str());
    return 1;
  }
  // Given a root, also list its other checkpoints.
  const bool given_root = !std::filesystem::exists(absl::StrCat(path, "/", checkpoint::kManifestFileName));
  const std::string root = given_root ? path : "";
  PrintSummary(root, *step_dir, (*reader)->manifest(), flags.Has("slices"), !flags.Has("no_config"));
  if (flags.Has("no_verify")) {
    std::printf("verify      skipped (--no_verify)\n");
    return 0;
  }

  // Every slice, with every problem named (not just the first), but one line per broken file at most
  // once a file is missing or truncated (all its slices would fail the same way).
  const absl::Time start = absl::Now();
  int slices = 0, bad = 0;
  uint64_t bytes = 0;
  std::set<std::string> broken_files;
  for (const auto& t : (*reader)->manifest().tensors()) {
    for (const auto& s : t.slices()) {
      if (broken_files.count(s.file())) {
        ++bad;
        continue;
      }
      ++slices;
      absl::Status st = (*reader)->VerifySlice(t, s);
      if (st.ok()) {
        bytes += s.bytes();
        continue;
      }
      ++bad;
      std::fprintf(stderr, "nats inspect: %s\n", std::string(st.message()).c_str());
      if (!absl::IsDataLoss(st) || st.message().find("CRC mismatch") == absl::string_view::npos) {
        broken_files.insert(s.file());
      }
    }
  }
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  if (bad > 0) {
    std::printf("verify      FAILED: %d damaged or unreadable slices (details above)\n", bad);
    std::fflush(stdout);
    std::fprintf(stderr,
                 "nats inspect: %s is damaged; resume from another step (nats inspect <root> lists them)\n",
                 step_dir->c_str());
    return 1;
  }
  std::printf("verify      OK: %d slices, %s, CRC-32C checked in %.2f s (%.0f MB/s)\n", slices,
              data::FormatBytes(static_cast<double>(bytes)).c_str(), seconds,
              seconds > 0 ? bytes / seconds / 1e6 : 0.0);
  return 0;
}

}  // namespace nats::launch
