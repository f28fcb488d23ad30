// `nats train`: load the config, apply --set overrides, train, print a summary (JSON line last).
#include <cmath>
#include <cstdio>

#include "absl/strings/str_format.h"
#include "launch/commands.h"
#include "launch/flag_parser.h"
#include "parallel/mpi_communicator.h"
#include "runtime/config.h"
#include "runtime/metrics_log.h"
#include "runtime/trainer.h"

namespace nats::launch {
namespace {

constexpr char kHelp[] =
    "usage: nats train --config FILE.textproto [--set section.field=value ...] [--resume]\n"
    "  --config FILE   text-format config (see configs/)\n"
    "  --set A=B       override one field, e.g. --set optim.lr=3e-4 --set train.steps=200 (repeatable)\n"
    "  --resume        continue from the newest checkpoint of the run (checkpoint.dir or <run_dir>/ckpt)\n"
    "SIGTERM/SIGINT/SIGUSR1: finish the step, save a checkpoint, exit 0 (a second signal exits at once).\n";

int TrainWithFlags(int argc, char** argv) {
  ParsedFlags parsed;
  if (auto exit_code = ParseCommandFlags(argc, argv, {"config", "set"}, {"resume"}, kHelp, &parsed))
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
  auto trainer = Trainer::Create(*cfg, options);
  if (!trainer.ok()) {
    std::fprintf(stderr, "train: %s\n", std::string(trainer.status().message()).c_str());
    return 1;
  }
  auto summary = (*trainer)->Train();
  if (!summary.ok()) {
    std::fprintf(stderr, "train: %s\n", std::string(summary.status().message()).c_str());
    return 1;
  }
  if (!(*trainer)->is_root()) return 0;
  std::printf("%s\n", absl::StrFormat("summary: %d steps in %s, %.0f tok/s, val loss %.4f -> %.4f (ppl %.2f, "
                                      "%.4f bits/byte), final train loss %.4f",
                                      summary->steps, FormatDuration(summary->seconds),
                                      summary->tokens_per_second, summary->first_val_loss,
                                      summary->last_val_loss, std::exp(summary->last_val_loss),
                                      summary->last_val_bpb, summary->last_train_loss)
                          .c_str());
  std::printf("%s\n", JsonLine()
                          .Add("kind", "summary")
                          .Add("steps", summary->steps)
                          .Add("parameters", summary->parameters)
                          .Add("seconds", summary->seconds)
                          .Add("tokens_per_s", summary->tokens_per_second)
                          .Add("first_val_loss", summary->first_val_loss)
                          .Add("val_loss", summary->last_val_loss)
                          .Add("val_bpb", summary->last_val_bpb)
                          .Add("train_loss", summary->last_train_loss)
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
