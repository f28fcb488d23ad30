#include "runtime/run_directory.h"

#include <ATen/ATen.h>
#include <google/protobuf/descriptor.h>
#include <google/protobuf/text_format.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <system_error>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "checkpoints/checkpoint_dir.h"
#include "checkpoints/durable_file.h"
#include "parallel/rank_agreement.h"
#include "runtime/checkpointing.h"
#include "runtime/config.h"

namespace nats {
namespace {

namespace fs = std::filesystem;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;

constexpr char kConfigFileName[] = "config.textproto";

// The value as `--set field=value` takes it: strings without text-format quotes.
std::string SetValue(const std::string& text) {
  if (text.size() >= 2 && text.front() == '"' && text.back() == '"') {
    std::string raw;
    if (absl::CUnescape(text.substr(1, text.size() - 2), &raw)) return raw;
  }
  return text;
}

// Why a change is refused, as the middle of the message.
std::string RefusalReason(const std::string& field) {
  if (field == "model.context_length") {
    return "the loader's windows and the positions the model was trained on";
  }
  if (field == "model.vocab_size") return "the embedding and output layers are vocab_size rows";
  if (absl::StartsWith(field, "model.") || field == "nats.layers") {
    return "the checkpoint's tensors have the saved model's architecture";
  }
  if (field == "data.tokenizer") return "token ids would stand for other strings";
  if (field == "train.batch_size") return "the loader's cursor counts samples of the saved global batch";
  if (field == "train.seed") return "it sets the data order, so the run would not continue the saved one";
  return "the run would read other data than the saved one";  // data paths
}

// Every complete step under `root`, as "10, 12, 14" (for messages).
std::string StepList(const std::string& root) {
  absl::StatusOr<std::vector<int64_t>> steps = checkpoint::ListCompleteSteps(root);
  if (!steps.ok() || steps->empty()) return "none";
  return absl::StrJoin(*steps, ", ");
}

bool SameDirectory(const std::string& a, const std::string& b) {
  std::error_code ec1, ec2;
  const fs::path pa = fs::weakly_canonical(a, ec1), pb = fs::weakly_canonical(b, ec2);
  return !ec1 && !ec2 && pa == pb;
}

bool IsMetricsFileName(const std::string& name) {
  if (name == MetricsFileName(0)) return true;
  absl::string_view rest = name;
  if (!absl::ConsumePrefix(&rest, "metrics.rank") || !absl::ConsumeSuffix(&rest, ".jsonl") || rest.empty()) {
    return false;
  }
  return std::all_of(rest.begin(), rest.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// The run's metrics logs that hold at least one byte.
std::vector<fs::path> NonEmptyMetricsLogs(const std::string& run_dir) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (fs::directory_iterator it(run_dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code size_ec;
    if (IsMetricsFileName(it->path().filename().string()) && fs::file_size(it->path(), size_ec) > 0 &&
        !size_ec) {
      out.push_back(it->path());
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

int64_t CountLines(const fs::path& path) {
  std::ifstream in(path);
  int64_t lines = 0;
  for (std::string line; std::getline(in, line);) ++lines;
  return lines;
}

// The guard of a fresh start: OK when `cfg`'s run directory holds no run.
absl::Status CheckNoRun(const config::Config& cfg) {
  const std::string root = CheckpointRoot(cfg);
  const std::string& run_dir = cfg.train().run_dir();
  absl::StatusOr<std::vector<int64_t>> steps = checkpoint::ListCompleteSteps(root);
  if (!steps.ok()) return steps.status();
  std::string held;
  if (!steps->empty()) {
    held = absl::StrCat("checkpoints up to step ", steps->back(), " in ", root);
  } else if (const std::vector<fs::path> logs = NonEmptyMetricsLogs(run_dir); !logs.empty()) {
    held = absl::StrCat("no checkpoint, but ", logs.front().string(), " has ", CountLines(logs.front()),
                        " lines");
  } else {
    return absl::OkStatus();
  }
  return absl::FailedPreconditionError(
      absl::StrCat("train.run_dir ", run_dir, " holds a run (", held,
                   "); pass --resume to continue it or --overwrite to delete its checkpoints and start over "
                   "(or choose another "
                   "train.run_dir)"));
}

// Rank 0's verdict and plan, the same on every rank (one AllGatherV; the other ranks send one byte).
absl::StatusOr<RunStart> ShareFromRankZero(parallel::Communicator& comm,
                                           const absl::StatusOr<RunStart>& mine) {
  if (comm.size() == 1) return mine;
  std::string bytes = "x";
  if (comm.rank() == 0) {
    const absl::Status status = mine.status();
    bytes = absl::StrCat(static_cast<int>(status.code()), "\n", mine.ok() ? mine->resume_dir : "", "\n",
                         mine.ok() && mine->rollback ? 1 : 0, "\n", status.message());
  }
  at::Tensor t = at::empty({static_cast<int64_t>(bytes.size())}, at::TensorOptions().dtype(at::kByte));
  std::memcpy(t.data_ptr(), bytes.data(), bytes.size());
  std::vector<at::Tensor> gathered;
  if (absl::Status s = comm.AllGatherV(t, &gathered); !s.ok()) return s;
  if (comm.rank() == 0) return mine;
  const at::Tensor zero = gathered.at(0).contiguous();
  const std::string text(static_cast<const char*>(zero.data_ptr()), static_cast<size_t>(zero.numel()));
  const std::vector<std::string> parts = absl::StrSplit(text, absl::MaxSplits('\n', 3));
  int code = 0;
  if (parts.size() != 4 || !absl::SimpleAtoi(parts[0], &code)) {
    return absl::InternalError("run directory: cannot parse rank 0's plan");
  }
  if (code != 0) return absl::Status(static_cast<absl::StatusCode>(code), parts[3]);
  RunStart start;
  start.resume_dir = parts[1];
  start.rollback = parts[2] == "1";
  return start;
}

// Rank 0: the whole decision.
absl::StatusOr<RunStart> PlanOnRankZero(const config::Config& cfg, const RunDirectoryOptions& options) {
  RunStart start;
  const std::string root = CheckpointRoot(cfg);
  if (!options.resume && options.resume_from.empty()) {
    if (options.overwrite) return start;  // OpenRunDirectory deletes what is there
    if (absl::Status s = CheckNoRun(cfg); !s.ok()) return s;
    return start;
  }

  absl::StatusOr<std::vector<int64_t>> own_steps = checkpoint::ListCompleteSteps(root);
  if (!own_steps.ok()) return own_steps.status();
  if (!options.resume_from.empty()) {
    const std::string& from = options.resume_from;
    int64_t number = -1;
    const bool is_number = !from.empty() && std::all_of(from.begin(), from.end(), absl::ascii_isdigit) &&
                           absl::SimpleAtoi(from, &number);
    if (is_number) {
      const std::string dir = checkpoint::StepDirPath(root, number);
      if (!fs::exists(absl::StrCat(dir, "/", checkpoint::kManifestFileName))) {
        return absl::NotFoundError(absl::StrCat("--resume_from=", from, ": ", dir,
                                                " is not a complete checkpoint; complete steps under ", root,
                                                ": ", StepList(root)));
      }
      start.resume_dir = dir;
    } else {
      absl::StatusOr<std::string> dir = checkpoint::ResolveCheckpointPath(from);
      if (!dir.ok())
        return absl::Status(dir.status().code(),
                            absl::StrCat("--resume_from=", from, ": ", dir.status().message()));
      start.resume_dir = *dir;
    }
    if (SameDirectory(fs::path(start.resume_dir).parent_path().string(), root)) {
      absl::StatusOr<checkpoint::Manifest> m = checkpoint::ReadManifest(start.resume_dir);
      if (!m.ok()) return m.status();
      start.rollback = !own_steps->empty() && m->step() < own_steps->back();
    } else if (!own_steps->empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "--resume_from=", from, " starts this run from another run's checkpoint, but ", root,
          " already holds checkpoints (steps ", StepList(root),
          "); use an empty train.run_dir (or checkpoint.dir), or --resume to continue this run"));
    }
  } else {
    absl::StatusOr<std::string> latest = checkpoint::FindLatestCheckpoint(root);
    if (absl::IsNotFound(latest.status())) {
      start.notes.push_back(
          absl::StrCat("--resume: no checkpoint under ", root, " yet; starting from step 0"));
      return start;
    }
    if (!latest.ok()) {
      return absl::Status(latest.status().code(),
                          absl::StrCat(latest.status().message(), " (complete steps under ", root, ": ",
                                       StepList(root), ")"));
    }
    start.resume_dir = *latest;
  }

  absl::StatusOr<checkpoint::Manifest> manifest = checkpoint::ReadManifest(start.resume_dir);
  if (!manifest.ok()) return manifest.status();
  if (!manifest->has_config()) {
    start.notes.push_back(
        absl::StrCat(start.resume_dir, " has no saved config; config changes are not checked"));
    return start;
  }
  start.changes = DiffConfigs(manifest->config(), cfg);
  if (absl::Status s = CheckResumeChanges(start.changes, options.allow_config_change, start.resume_dir);
      !s.ok()) {
    return s;
  }
  return start;
}

// --overwrite: the old run's checkpoints deleted, its metrics logs and config moved aside. Returns notes.
absl::StatusOr<std::vector<std::string>> Overwrite(const config::Config& cfg, JsonLine* line) {
  std::vector<std::string> notes;
  const std::string root = CheckpointRoot(cfg);
  const std::string& run_dir = cfg.train().run_dir();
  absl::StatusOr<int> deleted = checkpoint::RemoveAllCheckpoints(root);
  if (!deleted.ok()) return deleted.status();
  std::vector<fs::path> moving = NonEmptyMetricsLogs(run_dir);
  // The old run's config and TensorBoard events (runtime/event_file_writer.h) go with its metrics.
  for (const char* name : {kConfigFileName, "tb"}) {
    if (fs::exists(fs::path(run_dir) / name)) moving.push_back(fs::path(run_dir) / name);
  }
  std::string aside;
  if (!moving.empty()) {
    const std::string stamp = absl::FormatTime("%Y%m%d_%H%M%S", absl::Now(), absl::UTCTimeZone());
    aside = (fs::path(run_dir) / absl::StrCat("overwritten_", stamp)).string();
    for (int k = 2; fs::exists(aside); ++k)
      aside = (fs::path(run_dir) / absl::StrCat("overwritten_", stamp, "_", k)).string();
    std::error_code ec;
    fs::create_directories(aside, ec);
    if (ec) return checkpoint::ErrnoStatus("--overwrite: cannot create", aside, ec.value());
    for (const fs::path& p : moving) {
      fs::rename(p, fs::path(aside) / p.filename(), ec);
      if (ec)
        return checkpoint::ErrnoStatus(absl::StrCat("--overwrite: cannot move ", p.string(), " to"), aside,
                                       ec.value());
    }
  }
  // Empty metrics logs are not a run; they are simply continued.
  notes.push_back(
      absl::StrCat("--overwrite: deleted ", *deleted, " checkpoint(s) under ", root,
                   aside.empty() ? "" : absl::StrCat("; moved the old metrics and config to ", aside)));
  line->Add("kind", "overwrite").Add("rank", 0).Add("deleted_checkpoints", *deleted).Add("moved_to", aside);
  return notes;
}

}  // namespace

ResumeChange ClassifyResumeChange(const std::string& field) {
  // init_std only shapes the initial weights, which a resume replaces.
  if (field == "model.init_std") return ResumeChange::kAccepted;
  if (absl::StartsWith(field, "model.") || field == "nats.layers" || field == "data.tokenizer" ||
      field == "train.batch_size") {
    return ResumeChange::kRefused;
  }
  if (field == "data.train_path" || field == "data.val_path" || field == "train.seed") {
    return ResumeChange::kNeedsOverride;
  }
  return ResumeChange::kAccepted;
}

absl::Status CheckResumeChanges(const std::vector<ConfigChange>& changes, bool allow_config_change,
                                const std::string& step_dir) {
  std::vector<std::string> problems;
  for (const ConfigChange& c : changes) {
    const ResumeChange kind = ClassifyResumeChange(c.field);
    if (kind == ResumeChange::kAccepted || (kind == ResumeChange::kNeedsOverride && allow_config_change))
      continue;
    const std::string keep = absl::StrCat("--set ", c.field, "=", SetValue(c.saved));
    problems.push_back(absl::StrCat(
        c.field, " was ", c.saved, " when saved, now ", c.current, " (", RefusalReason(c.field), "); ",
        kind == ResumeChange::kRefused
            ? absl::StrCat("resume with ", keep,
                           ", or start a new run in another train.run_dir (or with --overwrite)")
            : absl::StrCat("resume with ", keep,
                           ", or pass --allow_config_change to continue with the new value")));
  }
  if (problems.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("cannot resume from ", step_dir, ": ", absl::StrJoin(problems, "; ")));
}

std::string MetricsFileName(int rank) {
  return rank == 0 ? "metrics.jsonl" : absl::StrCat("metrics.rank", rank, ".jsonl");
}

absl::StatusOr<RunStart> PlanRunStart(parallel::Communicator& comm, const config::Config& cfg,
                                      const RunDirectoryOptions& options) {
  absl::StatusOr<RunStart> mine = comm.rank() == 0 ? PlanOnRankZero(cfg, options) : RunStart{};
  return ShareFromRankZero(comm, mine);
}

absl::Status OpenRunDirectory(parallel::Communicator& comm, const config::Config& cfg,
                              const RunDirectoryOptions& options, const RunStart& start, int64_t step,
                              MetricsLog* log) {
  const std::string& run_dir = cfg.train().run_dir();
  const bool root = comm.rank() == 0;
  std::vector<std::string> notes = start.notes;
  std::vector<JsonLine> lines;
  absl::Status written = [&]() -> absl::Status {
    if (!root) return absl::OkStatus();
    if (options.overwrite) {
      JsonLine line;
      absl::StatusOr<std::vector<std::string>> more = Overwrite(cfg, &line);
      if (!more.ok()) return more.status();
      notes.insert(notes.end(), more->begin(), more->end());
      lines.push_back(line);
    }
    if (start.rollback) {
      absl::StatusOr<std::vector<std::string>> moved =
          checkpoint::AbandonStepsAfter(CheckpointRoot(cfg), step);
      if (!moved.ok()) return moved.status();
      notes.push_back(absl::StrCat("rolled back to step ", step, ": the newer checkpoints are now ",
                                   absl::StrJoin(*moved, ", "),
                                   " (kept for you, never resumed from by --resume; delete them when done)"));
      lines.push_back(JsonLine()
                          .Add("kind", "rollback")
                          .Add("rank", 0)
                          .Add("step", step)
                          .AddStringArray("abandoned", *moved));
    }
    std::error_code ec;
    fs::create_directories(run_dir, ec);
    if (ec) return checkpoint::ErrnoStatus("cannot create train.run_dir", run_dir, ec.value());
    const std::string config_path = (fs::path(run_dir) / kConfigFileName).string();
    std::ofstream out(config_path, std::ios::trunc);
    out << ConfigToText(cfg);
    if (!out.flush()) {
      return absl::PermissionDeniedError(
          absl::StrCat(config_path, ": cannot write; check train.run_dir is writable"));
    }
    return absl::OkStatus();
  }();
  if (absl::Status s = parallel::AgreeOnStatus(comm, written); !s.ok()) return s;

  absl::Status opened = [&]() -> absl::Status {
    std::error_code ec;
    fs::create_directories(run_dir, ec);  // a run directory that is not shared: each node makes its own
    if (ec) return checkpoint::ErrnoStatus("cannot create train.run_dir", run_dir, ec.value());
    return log->Open((fs::path(run_dir) / MetricsFileName(comm.rank())).string());
  }();
  if (absl::Status s = parallel::AgreeOnStatus(comm, opened); !s.ok()) return s;
  if (!root) return absl::OkStatus();

  if (!start.resume_dir.empty()) {
    lines.push_back(JsonLine()
                        .Add("kind", "resume")
                        .Add("rank", 0)
                        .Add("step", step)
                        .Add("from", start.resume_dir)
                        .Add("world_size", comm.size()));
  }
  if (!start.changes.empty()) {
    std::vector<std::string> described, fields, saved, current;
    for (const ConfigChange& c : start.changes) {
      const bool overridden = ClassifyResumeChange(c.field) == ResumeChange::kNeedsOverride;
      described.push_back(absl::StrCat(c.field, " ", c.saved, " -> ", c.current,
                                       overridden ? " (allowed by --allow_config_change)" : ""));
      fields.push_back(c.field);
      saved.push_back(c.saved);
      current.push_back(c.current);
    }
    notes.push_back(absl::StrCat("config changes on resume: ", absl::StrJoin(described, ", ")));
    lines.push_back(JsonLine()
                        .Add("kind", "config_change")
                        .Add("rank", 0)
                        .Add("step", step)
                        .Add("from", start.resume_dir)
                        .AddStringArray("fields", fields)
                        .AddStringArray("saved", saved)
                        .AddStringArray("current", current));
  }
  for (const std::string& note : notes) std::fprintf(stdout, "%s\n", note.c_str());
  std::fflush(stdout);
  for (const JsonLine& line : lines) log->Write(line);
  return absl::OkStatus();
}

}  // namespace nats
