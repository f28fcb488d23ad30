// The `nats` command-line front end: dispatches to the subcommands of launch/commands.h.
#include <cstdio>
#include <cstring>
#include <string>

#include "launch/commands.h"

namespace {

constexpr char kUsage[] =
    "usage: nats <command> [flags]\n"
    "\n"
    "commands:\n"
    "  train     --config FILE.textproto [--set section.field=value ...] [--resume]\n"
    "  eval      --checkpoint DIR [--data FILE.tok] [--policy nats|dense|streaming|h2o|all] [--mode M]\n"
    "  prepare   --data_dir=data --out_dir=data/books --tokenizer=gpt2|byte\n"
    "  inspect   CHECKPOINT_DIR_OR_STEP_DIR [--no_verify] [--slices] [--no_config]\n"
    "  tokenize  [--tokenizer=gpt2|byte] [--data_dir=data] [--json] < text\n"
    "  generate  --config FILE.textproto [--weights PATH] --prompt TEXT [--max_tokens N] [--policy nats|dense|...]\n"
    "\n"
    "Run `nats <command> --help` for the flags of one command.\n";

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string command = argv[1];
  if (command == "train") return nats::launch::RunTrain(argc - 1, argv + 1);
  if (command == "eval") return nats::launch::RunEval(argc - 1, argv + 1);
  if (command == "prepare") return nats::launch::RunPrepare(argc - 1, argv + 1);
  if (command == "tokenize") return nats::launch::RunTokenize(argc - 1, argv + 1);
  if (command == "generate") return nats::launch::RunGenerate(argc - 1, argv + 1);
  if (command == "inspect") return nats::launch::RunInspect(argc - 1, argv + 1);
  std::fprintf(stderr, "nats: unknown command '%s'\n\n%s", command.c_str(), kUsage);
  return 2;
}
