// The `nats` command-line front end: dispatches to the subcommands of launch/commands.h.
//
// No exception leaves main: a subcommand reports user errors as one line and an exit code itself; anything
// that still escapes (a c10::Error from LibTorch, std::bad_alloc, any std::exception) is a bug or an
// exhausted resource, and becomes one line "nats <command>: internal error: ... (please report)" and exit 1,
// instead of std::terminate's abort (exit 134) and a page of backtrace.
#include <c10/util/Exception.h>

#include <cstdio>
#include <cstring>
#include <exception>
#include <new>
#include <string>

#include "launch/commands.h"

namespace {

// One line per command, each naming only flags its own --help documents (tests/runtime/cli_help_test.sh
// checks that, so the two cannot drift apart).
constexpr char kUsage[] =
    "usage: nats <command> [flags]\n"
    "\n"
    "commands:\n"
    "  train     --config FILE.textproto [--set section.field=value ...] [--resume] [--resume_from STEP]\n"
    "  eval      --checkpoint DIR [--data PATH] [--policy nats|dense|streaming|h2o|all] [--mode M]\n"
    "  prepare   --input PATH_OR_GLOB ... --out DIR [--format auto|text|jsonl] [--tokenizer gpt2|byte] "
    "(none: books)\n"
    "  inspect   CHECKPOINT_DIR_OR_STEP_DIR [--no_verify] [--slices] [--no_config]\n"
    "  plot      RUN_DIR... | --sweep DIR [--out DIR]   run curves, or a sweep's scaling figures (PNG + "
    "SVG)\n"
    "  tokenize  [--tokenizer gpt2|byte] [--data_dir DIR] [--json] < text\n"
    "  generate  --checkpoint DIR --prompt TEXT [--max_tokens N] [--temperature T] [--policy nats|...]\n"
    "  sweep     --grid SWEEP.textproto [--out DIR] [--list] [--launcher CMD] [--emit slurm]  scaling-law "
    "grid\n"
    "  fit       RESULTS.csv [--out FIT.json] [--bootstrap N] [--budgets C,...]  Chinchilla fits (+ KV "
    "fraction)\n"
    "  import    --from HF_DIR --out CKPT_DIR [--set section.field=value ...]  a Hugging Face GPT-2 / Llama "
    "model\n"
    "  export    --checkpoint DIR --to HF_DIR [--shard_mb N]  a checkpoint in its Hugging Face family's "
    "layout\n"
    "  bench     peak [--threads N] [--seconds S] [--out FILE]  this machine's fp32 matmul peak, for MFU\n"
    "  version   commit, build type, LibTorch, MPI / NCCL / CUDA, compiler (also: nats --version)\n"
    "\n"
    "Flags are `--flag value` or `--flag=value`. Run `nats <command> --help` (or -h) for the flags of one\n"
    "command.\n";

int Dispatch(const std::string& command, int argc, char** argv) {
  if (command == "train") return nats::launch::RunTrain(argc, argv);
  if (command == "eval") return nats::launch::RunEval(argc, argv);
  if (command == "prepare") return nats::launch::RunPrepare(argc, argv);
  if (command == "tokenize") return nats::launch::RunTokenize(argc, argv);
  if (command == "generate") return nats::launch::RunGenerate(argc, argv);
  if (command == "inspect") return nats::launch::RunInspect(argc, argv);
  if (command == "plot") return nats::launch::RunPlot(argc, argv);
  if (command == "sweep") return nats::launch::RunSweep(argc, argv);
  if (command == "fit") return nats::launch::RunFit(argc, argv);
  if (command == "import") return nats::launch::RunImport(argc, argv);
  if (command == "export") return nats::launch::RunExport(argc, argv);
  if (command == "version") return nats::launch::RunVersion(argc, argv);
  if (command == "bench") return nats::launch::RunBench(argc, argv);
  std::fprintf(stderr, "nats: unknown command '%s'\n\n%s", command.c_str(), kUsage);
  return 2;
}

// One line: LibTorch messages may span several.
std::string OneLine(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  for (char& c : text) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return text;
}

bool IsOutOfMemory(const std::string& what) {
  return what.find("can't allocate memory") != std::string::npos ||
         what.find("out of memory") != std::string::npos;
}

int ReportEscaped(const std::string& command, const std::string& what) {
  if (IsOutOfMemory(what)) {
    std::fprintf(
        stderr,
        "nats %s: out of memory: %s; activations grow with model.context_length (quadratically in dense "
        "attention layers), train.micro_batch_size, model.d_model and model.n_layer: lower one of them\n",
        command.c_str(), what.c_str());
  } else {
    std::fprintf(stderr, "nats %s: internal error: %s (please report)\n", command.c_str(), what.c_str());
  }
  std::fflush(stderr);
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  // The spelling every tool accepts; `nats version` is the same command.
  const std::string command = std::strcmp(argv[1], "--version") == 0 ? "version" : argv[1];
  try {
    return Dispatch(command, argc - 1, argv + 1);
  } catch (const c10::Error& e) {  // before std::exception: what() would append a C++ backtrace
    return ReportEscaped(command, OneLine(e.what_without_backtrace()));
  } catch (const std::bad_alloc& e) {
    return ReportEscaped(command, std::string("out of memory (") + e.what() + ")");
  } catch (const std::exception& e) {
    return ReportEscaped(command, OneLine(e.what()));
  } catch (...) {
    return ReportEscaped(command, "an exception that is not a std::exception");
  }
}
