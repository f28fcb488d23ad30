#include "runtime/signals.h"

#include <signal.h>
#include <unistd.h>

#include <cstring>

namespace nats {
namespace {

volatile sig_atomic_t g_stop_signal = 0;

// Only async-signal-safe calls here: write(2) and _exit(2).
void OnStopSignal(int sig) {
  if (g_stop_signal != 0) {
    static const char kNow[] = "nats: second signal, exiting without saving\n";
    (void)!::write(STDERR_FILENO, kNow, sizeof(kNow) - 1);
    ::_exit(128 + sig);
  }
  g_stop_signal = sig;
  static const char kLater[] =
      "nats: stop requested; saving a checkpoint after this step (send the signal again to exit now)\n";
  (void)!::write(STDERR_FILENO, kLater, sizeof(kLater) - 1);
}

}  // namespace

void InstallStopSignalHandlers() {
  struct sigaction action;
  std::memset(&action, 0, sizeof(action));
  action.sa_handler = OnStopSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  ::sigaction(SIGTERM, &action, nullptr);
  ::sigaction(SIGINT, &action, nullptr);
  ::sigaction(SIGUSR1, &action, nullptr);
}

bool StopRequested() { return g_stop_signal != 0; }

int StopSignal() { return g_stop_signal; }

void ClearStopRequest() { g_stop_signal = 0; }

}  // namespace nats
