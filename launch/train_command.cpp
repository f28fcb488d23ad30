// `nats train`: load the config, apply --set overrides, train, print a summary (JSON line last).
#include <errno.h>  // program_invocation_name (GNU)
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "checkpoints/crash_point.h"
#include "checkpoints/durable_file.h"
#include "data/human_units.h"
#include "launch/commands.h"
#include "launch/flag_parser.h"
#include "parallel/communicator.h"
#include "parallel/mpi_runtime.h"
#include "runtime/config.h"
#include "runtime/metrics_log.h"
#include "runtime/trainer.h"

namespace nats::launch {
namespace {

constexpr char kHelp[] =
    "usage: nats train --config FILE.textproto [--set section.field=value ...]\n"
    "                  [--resume | --resume_from DIR_OR_STEP] [--allow_config_change] [--overwrite]\n"
    "                  [--print_config]\n"
    "  --config FILE        text-format config (see configs/)\n"
    "  --set A=B            override one field, e.g. --set optim.lr=3e-4 --set train.steps=200 (repeatable)\n"
    "  --resume             continue from the newest complete checkpoint of the run (checkpoint.dir or\n"
    "                       <run_dir>/ckpt); start at step 0 when there is none\n"
    "  --resume_from X      continue from step directory X, checkpoint root X, or step number X under the\n"
    "                       run's checkpoint root (an older step of this run rolls back: newer steps are\n"
    "                       renamed step_<N>.abandoned)\n"
    "  --allow_config_change  accept a changed data.train_path, data.val_path or train.seed on resume\n"
    "                       (architecture, tokenizer and batch size changes are always refused)\n"
    "  --overwrite          start over in a run_dir that holds a run: delete its checkpoints and move its\n"
    "                       metrics and config to <run_dir>/overwritten_<time>/ (without it, such a run_dir\n"
    "                       is refused)\n"
    "  --print_config       print the effective config (defaults included) at start; it is always written\n"
    "                       to <run_dir>/config.textproto\n"
    "SIGTERM/SIGINT/SIGUSR1: finish the step, save a checkpoint, print the command that resumes, exit 0\n"
    "(a second signal exits at once). A resumed run's summary counts the steps and time of this session.\n"
    "Fault injection (tests): NATS_CRASH_POINT=NAME[:N] raises SIGKILL at the N-th (default 1st) pass of a\n"
    "checkpoint crash point (checkpoints/crash_point.h); NATS_FAULT_ENOSPC_AFTER_BYTES=B makes the "
    "checkpoint\n"
    "write after B bytes fail once with ENOSPC.\n";

// NATS_CRASH_POINT: the point's name and how many passes are left before the kill.
std::string g_crash_point;
int64_t g_crash_countdown = 0;

void KillAtCrashPoint(absl::string_view point) {
  if (point != g_crash_point || --g_crash_countdown > 0) return;
  const std::string line = absl::StrCat("NATS_CRASH_POINT: SIGKILL at ", point, "\n");
  (void)!::write(2, line.data(), line.size());
  ::raise(SIGKILL);
}

// The fault-injection hooks from the environment, read once at start. InvalidArgument for a value that
// would silently never fire (a misspelt point, a count that is not a number).
absl::Status InstallFaultInjection() {
  if (const char* spec = std::getenv("NATS_CRASH_POINT"); spec != nullptr && *spec != '\0') {
    const std::vector<std::string> parts = absl::StrSplit(spec, ':');
    const bool known =
        std::any_of(std::begin(checkpoint::kCrashPointNames), std::end(checkpoint::kCrashPointNames),
                    [&](const char* name) { return parts[0] == name; });
    int64_t nth = 1;
    if (!known || parts.size() > 2 || (parts.size() == 2 && (!absl::SimpleAtoi(parts[1], &nth) || nth < 1))) {
      return absl::InvalidArgumentError(absl::StrCat("NATS_CRASH_POINT=", spec,
                                                     ": expected NAME[:N] with N >= 1 and NAME one of ",
                                                     absl::StrJoin(checkpoint::kCrashPointNames, ", ")));
    }
    g_crash_point = parts[0];
    g_crash_countdown = nth;
    checkpoint::SetCrashPointHookForTesting(KillAtCrashPoint);
  }
  if (const char* spec = std::getenv("NATS_FAULT_ENOSPC_AFTER_BYTES"); spec != nullptr && *spec != '\0') {
    int64_t bytes = -1;
    if (!absl::SimpleAtoi(spec, &bytes) || bytes < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("NATS_FAULT_ENOSPC_AFTER_BYTES=", spec, ": expected a byte count >= 0"));
    }
    checkpoint::SetWriteFaultForTesting(bytes);
  }
  return absl::OkStatus();
}

// `word` as one shell word: unchanged when it has no character a shell treats specially, else single-quoted.
std::string ShellQuote(const std::string& word) {
  constexpr char kPlain[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-+=./,:@%";
  const bool plain = !word.empty() && word.find_first_not_of(kPlain) == std::string::npos;
  if (plain) return word;
  std::string quoted = "'";
  for (char c : word) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

// The command that continues this run after a stop signal, printed so that it can be pasted as is: the
// binary as it was invoked, the same --config and --set flags in their order, then --resume (the checkpoint
// the stop just saved is the newest complete one). --resume_from and --overwrite are dropped: after the stop
// they would pick an older step or delete the checkpoint. A rank cannot see mpirun's own flags, so under a
// launcher the command is only the part after the launcher's.
std::string ResumeCommand(const ParsedFlags& flags) {
  std::vector<std::string> words = {program_invocation_name, "train", "--config", flags.Get("config")};
  if (auto it = flags.values.find("set"); it != flags.values.end()) {
    for (const std::string& assignment : it->second) words.insert(words.end(), {"--set", assignment});
  }
  if (flags.Has("allow_config_change")) words.push_back("--allow_config_change");
  words.push_back("--resume");
  std::string command = "`";
  for (const std::string& word : words)
    absl::StrAppend(&command, command.size() > 1 ? " " : "", ShellQuote(word));
  command += "`";
  if (parallel::LaunchedByMpi()) {
    const char* size = std::getenv("OMPI_COMM_WORLD_SIZE");
    absl::StrAppend(&command, " prefixed by the same launcher and its flags (e.g. `mpirun -np ",
                    size != nullptr ? size : "N", " ...`)");
  }
  return command;
}

// "summary: 150 steps in 12s"; a resumed run counts this session only, and says where it started.
std::string StepsAndTime(const TrainSummary& summary) {
  if (summary.resumed_from_step < 0) {
    return absl::StrFormat("%d steps in %s", summary.steps, data::FormatDuration(summary.seconds));
  }
  return absl::StrFormat("resumed from step %d: %d steps in %.1f s this session (step %d -> %d)",
                         summary.resumed_from_step, summary.steps - summary.resumed_from_step,
                         summary.seconds, summary.resumed_from_step, summary.steps);
}

// <run_dir>/summary.json: the finished run's result for programs (`nats sweep` reads it): full double
// precision, so that a resumed run can be compared bit for bit with one that ran straight through. Written
// (atomically) only when the run reached train.steps; the one of an earlier attempt is removed when a run
// starts, so a stopped run leaves none. A failure to write it is reported, not fatal: the checkpoints hold
// the run.
void WriteSummaryFile(const config::Config& cfg, const TrainSummary& summary) {
  namespace fs = std::filesystem;
  nlohmann::json json = {
      {"finished", true},
      {"steps", summary.steps},
      {"config_hash", ConfigHashText(cfg)},
      {"parameters", summary.parameters},
      {"val_loss", summary.last_val_loss},
      {"best_val_loss", summary.best_val_loss},
      {"val_bpb", summary.last_val_bpb},
      {"train_loss", summary.last_train_loss},
      {"tokens_per_s", summary.tokens_per_second},
      {"seconds", summary.seconds},
      {"resumed_from_step", summary.resumed_from_step},
      {"skipped_steps", summary.skipped_steps},
      {"rollbacks", summary.rollbacks},
  };
  const std::string path = (fs::path(cfg.train().run_dir()) / "summary.json").string();
  if (absl::Status s = checkpoint::WriteFileDurably(path, json.dump(2) + "\n", "summary"); !s.ok()) {
    std::fprintf(stderr, "train: %s (the run summary); the checkpoints are complete\n",
                 std::string(s.message()).c_str());
  }
}

int TrainWithFlags(int argc, char** argv) {
  ParsedFlags parsed;
  if (auto exit_code =
          ParseCommandFlags(argc, argv, {"config", "set", "resume_from"},
                            {"resume", "allow_config_change", "overwrite", "print_config"}, kHelp, &parsed))
    return *exit_code;
  const ParsedFlags* flags = &parsed;
  if (!flags->Has("config")) {
    std::fprintf(stderr, "train: --config is required\n%s", kHelp);
    return 2;
  }
  auto cfg = LoadConfigFile(flags->Get("config"));
  if (!cfg.ok()) {
    std::fprintf(stderr, "train: %s\n", std::string(cfg.status().message()).c_str());
    return 2;
  }
  if (auto it = flags->values.find("set"); it != flags->values.end()) {
    for (const std::string& assignment : it->second) {
      if (absl::Status s = ApplyOverride(assignment, &*cfg); !s.ok()) {
        std::fprintf(stderr, "train: %s\n", std::string(s.message()).c_str());
        return 2;
      }
    }
  }
  TrainOptions options;
  options.resume = flags->Has("resume");
  options.resume_from = flags->Get("resume_from");
  options.allow_config_change = flags->Has("allow_config_change");
  options.overwrite = flags->Has("overwrite");
  options.resume_command = ResumeCommand(*flags);
  options.print_config = flags->Has("print_config");
  if (flags->Has("resume_from") && options.resume_from.empty()) {
    std::fprintf(stderr, "train: --resume_from needs a step directory, checkpoint root or step number\n%s",
                 kHelp);
    return 2;
  }
  if (options.overwrite && (options.resume || !options.resume_from.empty())) {
    std::fprintf(
        stderr,
        "train: --overwrite starts the run over and deletes its checkpoints; it cannot be combined with "
        "--resume or --resume_from\n");
    return 2;
  }
  if (absl::Status s = InstallFaultInjection(); !s.ok()) {
    std::fprintf(stderr, "train: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  auto trainer = Trainer::Create(*cfg, options);
  if (!trainer.ok()) {
    std::fprintf(stderr, "train: %s\n", std::string(trainer.status().message()).c_str());
    return 1;
  }
  if ((*trainer)->is_root()) {
    std::error_code ignored;  // absent is the usual case
    std::filesystem::remove(std::filesystem::path(cfg->train().run_dir()) / "summary.json", ignored);
  }
  auto summary = (*trainer)->Train();
  if (!summary.ok()) {
    std::fprintf(stderr, "train: %s\n", std::string(summary.status().message()).c_str());
    return 1;
  }
  if (!(*trainer)->is_root()) return 0;
  if (!summary->stopped_by_signal) WriteSummaryFile(*cfg, *summary);
  std::printf("%s\n",
              absl::StrFormat("summary: %s, %.0f tok/s, val loss %.4f -> %.4f (ppl %.2f, "
                              "%.4f bits/byte), final train loss %.4f",
                              StepsAndTime(*summary), summary->tokens_per_second, summary->first_val_loss,
                              summary->last_val_loss, std::exp(summary->last_val_loss), summary->last_val_bpb,
                              summary->last_train_loss)
                  .c_str());
  if (summary->skipped_steps > 0) {
    std::printf(
        "bad steps: %lld skipped, %lld rollback(s) (\"kind\":\"bad_step\" / \"rollback\" lines in "
        "metrics.jsonl)\n",
        static_cast<long long>(summary->skipped_steps), static_cast<long long>(summary->rollbacks));
  }
  std::printf("%s\n", JsonLine()
                          .Add("kind", "summary")
                          .Add("steps", summary->steps)
                          .Add("resumed_from_step", summary->resumed_from_step)
                          .Add("parameters", summary->parameters)
                          .Add("seconds", summary->seconds)
                          .Add("tokens_per_s", summary->tokens_per_second)
                          .Add("first_val_loss", summary->first_val_loss)
                          .Add("val_loss", summary->last_val_loss)
                          .Add("val_bpb", summary->last_val_bpb)
                          .Add("train_loss", summary->last_train_loss)
                          .Add("skipped_steps", summary->skipped_steps)
                          .Add("rollbacks", summary->rollbacks)
                          .str()
                          .c_str());
  return 0;
}

}  // namespace

int RunTrain(int argc, char** argv) {
  const int code = TrainWithFlags(argc, argv);
  // The trainer (and its communicators) are gone here; MPI may now be finalised.
  parallel::FinalizeMpi();
  return code;
}

}  // namespace nats::launch
