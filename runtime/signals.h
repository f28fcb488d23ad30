// runtime/signals.h
//
// Graceful stop on SIGTERM/SIGINT/SIGUSR1 (schedulers send SIGTERM before a kill; Ctrl-C sends SIGINT):
//  - the first signal only sets a flag; the trainer polls StopRequested() after each step, agrees on it
//    across ranks (DecideCheckpoint in runtime/checkpointing.h: a signal may reach only some ranks),
//    saves a checkpoint and exits;
//  - a second signal exits at once with 128 + signal number (130 for SIGINT, 143 for SIGTERM), for a
//    user who does not want to wait for the save. A kill in the middle of a save is safe: the previous
//    checkpoint stays the newest complete one (checkpoints/checkpoint_dir.h).
// SIGUSR1 is handled like SIGTERM. That matters under mpirun: Open MPI answers SIGTERM/SIGINT by
// SIGTERM to every rank and SIGKILL one second later (MCA odls_base_sigkill_timeout, default 1), too
// soon to save, but it forwards SIGUSR1 untouched: `kill -USR1 <mpirun pid>` saves and stops the job
// (slurm: `sbatch --signal=USR1@120`).
#pragma once

namespace nats {

// Installs the handlers (idempotent). Uses SA_RESTART so that I/O and MPI calls are not interrupted.
void InstallStopSignalHandlers();

// True once a first SIGTERM/SIGINT arrived; async-signal-safe to read.
bool StopRequested();
// The signal number that requested the stop, 0 when none.
int StopSignal();

// Clears the flag (tests; or a trainer that handled the request and keeps running).
void ClearStopRequest();

}  // namespace nats
