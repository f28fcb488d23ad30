// launch/commands.h
//
// The subcommands of the `nats` binary. Each takes the arguments after its name
// (argv[0] is the subcommand) and returns the process exit code; errors are printed
// to stderr as one line naming the file or flag and the fix. Every one (prepare once its rewrite
// lands) parses its flags with launch/flag_parser.h (`--flag value` and `--flag=value`), prints its
// help to stdout with exit code 0 for --help / -h, and exits with 2 on a usage error.
#pragma once

namespace nats::launch {

int RunTrain(int argc, char** argv);     // launch/train_command.cpp
int RunEval(int argc, char** argv);      // launch/eval_command.cpp
int RunPrepare(int argc, char** argv);   // launch/prepare_command.cpp
int RunTokenize(int argc, char** argv);  // launch/tokenize_command.cpp
int RunGenerate(int argc, char** argv);  // launch/generate_command.cpp
int RunInspect(int argc, char** argv);   // launch/inspect_command.cpp
int RunPlot(int argc, char** argv);      // launch/plot_command.cpp (runs launch/plot_runs.py)
int RunSweep(int argc, char** argv);     // launch/sweep_command.cpp (scaling/sweep_*.h)
int RunFit(int argc, char** argv);       // launch/fit_command.cpp (scaling/law_fit.h, scaling/isoflop_fit.h)
int RunImport(int argc, char** argv);    // launch/import_command.cpp (interop/hf_import.h)
int RunExport(int argc, char** argv);    // launch/export_command.cpp (interop/hf_export.h)
int RunVersion(int argc, char** argv);   // launch/version_command.cpp
int RunBench(int argc, char** argv);     // launch/bench_command.cpp (runtime/peak_flops.h)

}  // namespace nats::launch
