// launch/commands.h
//
// The subcommands of the `nats` binary. Each takes the arguments after its name
// (argv[0] is the subcommand) and returns the process exit code; errors are printed
// to stderr as one line naming the file or flag and the fix.
#pragma once

namespace nats::launch {

int RunTrain(int argc, char** argv);     // launch/train_command.cpp
int RunEval(int argc, char** argv);      // launch/eval_command.cpp
int RunPrepare(int argc, char** argv);   // launch/prepare_command.cpp
int RunTokenize(int argc, char** argv);  // launch/tokenize_command.cpp
int RunGenerate(int argc, char** argv);  // launch/generate_command.cpp
int RunInspect(int argc, char** argv);   // launch/inspect_command.cpp
int RunPlot(int argc, char** argv);      // launch/plot_command.cpp (runs launch/plot_runs.py)

}  // namespace nats::launch
