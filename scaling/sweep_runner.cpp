#include "scaling/sweep_runner.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "data/human_units.h"
#include "runtime/config.h"
#include "scaling/results_table.h"
#include "scaling/slurm_script.h"

namespace nats::scaling {
namespace fs = std::filesystem;
namespace {

using Clock = std::chrono::steady_clock;

volatile sig_atomic_t g_signals = 0;
volatile sig_atomic_t g_first_signal = 0;

void OnStopSignal(int sig) {
  if (g_signals == 0) g_first_signal = sig;
  g_signals = g_signals + 1;
}

void InstallHandlers() {
  struct sigaction sa = {};
  sa.sa_handler = OnStopSignal;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGUSR1}) sigaction(sig, &sa, nullptr);
}

// An exclusive lock on <run_dir>/.lock that lives as long as this object (flock: the kernel drops it when the
// process dies, so a crashed sweep leaves no stale lock).
class CellLock {
 public:
  explicit CellLock(const fs::path& run_dir) {
    std::error_code ec;
    fs::create_directories(run_dir, ec);
    // Not close-on-exec: the cell's trainer inherits the lock, so a cell whose sweep was killed stays locked
    // until its trainer has saved and exited.
    fd_ = open((run_dir / ".lock").c_str(), O_RDWR | O_CREAT, 0644);
    if (fd_ >= 0 && flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      close(fd_);
      fd_ = -1;
    }
  }
  ~CellLock() {
    if (fd_ >= 0) close(fd_);
  }
  bool held() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

// Rebuilds results.csv under <out>/.results.lock: Slurm array tasks finish at any time.
void RebuildResults(const SweepPlan& plan) {
  std::error_code ec;
  fs::create_directories(plan.out_dir, ec);
  const int fd = open((fs::path(plan.out_dir) / ".results.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd >= 0) flock(fd, LOCK_EX);
  if (absl::Status s = WriteResults(plan); !s.ok()) {
    std::fprintf(stderr, "sweep: %s\n", std::string(s.message()).c_str());
  }
  if (fd >= 0) close(fd);
}

// The last "train" record of a cell's metrics log (its tail only: the log grows with the run).
nlohmann::json LastTrainRecord(const fs::path& metrics) {
  std::ifstream in(metrics, std::ios::binary);
  if (!in) return nullptr;
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  in.seekg(std::max<std::streamoff>(0, size - 16384));
  nlohmann::json last;
  for (std::string line; std::getline(in, line);) {
    nlohmann::json rec = nlohmann::json::parse(line, nullptr, false);
    if (!rec.is_discarded() && rec.is_object() && rec.value("kind", "") == "train") last = std::move(rec);
  }
  return last;
}

std::string LogTail(const fs::path& log, int lines) {
  std::ifstream in(log);
  std::vector<std::string> all;
  for (std::string line; std::getline(in, line);) all.push_back(line);
  std::string out;
  for (size_t i = all.size() > static_cast<size_t>(lines) ? all.size() - lines : 0; i < all.size(); ++i) {
    absl::StrAppend(&out, "    ", all[i], "\n");
  }
  return out;
}

// Achieved FLOP/s of the finished cells (planned FLOPs over wall time), else the sweep's assumption.
double FlopsPerSecond(const SweepPlan& plan) {
  double flops = 0, seconds = 0;
  for (const SweepCell& cell : plan.cells) {
    const CellResult r = ReadCellSummary(cell);
    if (r.finished && r.wall_s > 0) {
      flops += cell.flops;
      seconds += r.wall_s;
    }
  }
  return seconds > 0 ? flops / seconds : plan.sweep.assumed_gflops() * 1e9;
}

double RemainingFlops(const SweepPlan& plan, int from_index) {
  double flops = 0;
  for (const SweepCell& cell : plan.cells) {
    if (cell.index >= from_index && !ReadCellSummary(cell).finished) flops += cell.flops;
  }
  return flops;
}

// Runs one cell's command; returns its exit code (or 128 + signal).
int RunCell(const SweepCell& cell, const std::string& config_path, const SweepRunOptions& options,
            const std::string& prefix, double sweep_rate, double remaining_after) {
  const fs::path run_dir = cell.config.train().run_dir();
  const fs::path log = run_dir / "train.log";
  std::string command = options.launcher.empty() ? "exec" : absl::StrCat("exec ", options.launcher);
  absl::StrAppend(&command, " ", ShellQuote(options.nats_binary), " train --config ", ShellQuote(config_path),
                  " --resume");
  {
    std::ofstream out(log, std::ios::app);
    out << "# nats sweep: " << command << "\n";
  }
  const pid_t child = fork();
  if (child == 0) {
    // Its own process group: a Ctrl-C on the terminal reaches the sweep only, which forwards exactly one stop
    // request (a second one would make the trainer exit without saving).
    setpgid(0, 0);
    // If the sweep dies (SIGKILL, a lost terminal), the cell is asked to save and stop rather than run on
    // unsupervised.
    prctl(PR_SET_PDEATHSIG, SIGUSR1);
    if (getppid() == 1) _exit(1);  // the sweep died before prctl took effect
    const int fd = open(log.c_str(), O_WRONLY | O_APPEND | O_CREAT, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
      close(fd);
    }
    execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  if (child < 0) return 127;
  const bool tty = isatty(fileno(stdout));
  int forwarded = 0;
  int status = 0;
  auto last_print = Clock::now();
  const auto start = Clock::now();
  while (true) {
    const pid_t done = waitpid(child, &status, WNOHANG);
    if (done == child) break;
    while (forwarded < g_signals) {
      kill(child, SIGUSR1);
      ++forwarded;
      std::printf("\n%s: stop requested: asked %s to save a checkpoint and stop%s\n", prefix.c_str(),
                  cell.name.c_str(), forwarded > 1 ? " now (without saving)" : "");
      std::fflush(stdout);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    const double since = std::chrono::duration<double>(Clock::now() - last_print).count();
    if (since < (tty ? 1.0 : 60.0)) continue;
    last_print = Clock::now();
    const nlohmann::json rec = LastTrainRecord(run_dir / "metrics.jsonl");
    const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    std::string line = absl::StrFormat("%s %s: %s", prefix, cell.name, data::FormatDuration(elapsed));
    if (rec.is_object()) {
      const int64_t step = rec.value("step", int64_t{0});
      const double cell_left =
          step > 0 ? elapsed * static_cast<double>(cell.steps - step) / static_cast<double>(step) : 0.0;
      absl::StrAppend(
          &line, absl::StrFormat(" | step %d/%d | loss %.4f | cell ETA %s | sweep ETA %s", step, cell.steps,
                                 rec.value("loss", 0.0), data::FormatDuration(cell_left),
                                 data::FormatDuration(cell_left + remaining_after / sweep_rate)));
    }
    if (tty) {
      std::printf("\r\033[K%s", line.c_str());
    } else {
      std::printf("%s\n", line.c_str());
    }
    std::fflush(stdout);
  }
  if (tty) std::printf("\r\033[K");
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

}  // namespace

absl::StatusOr<std::string> WriteCellConfig(const SweepCell& cell) {
  const fs::path dir = cell.config.train().run_dir();
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec)
    return absl::PermissionDeniedError(absl::StrCat(dir.string(), ": cannot create (", ec.message(), ")"));
  const fs::path path = dir / "cell.textproto";
  std::ofstream out(path, std::ios::trunc);
  out << "# Cell " << cell.name << " of a `nats sweep`; written by the sweep, rewritten at each run.\n"
      << ConfigToText(cell.config);
  if (!out.flush()) return absl::PermissionDeniedError(absl::StrCat(path.string(), ": cannot write"));
  return path.string();
}

void PrintSweepPlan(const SweepPlan& plan) {
  const double rate = FlopsPerSecond(plan);
  std::printf("sweep %s: %zu cells -> %s\n", plan.grid_path.c_str(), plan.cells.size(), plan.out_dir.c_str());
  std::printf("%5s  %-34s %10s %7s %6s %11s %8s %10s %9s  %s\n", "index", "cell", "N (non-emb)", "d x L",
              "steps", "tokens", "tok/N", "FLOPs", "est. time", "status");
  double total_flops = 0, left_flops = 0;
  int done = 0;
  for (const SweepCell& cell : plan.cells) {
    const CellResult r = ReadCellSummary(cell);
    std::string status = r.status;
    if (r.finished) {
      ++done;
    } else {
      left_flops += cell.flops;
      if (fs::exists(fs::path(cell.config.train().run_dir()) / "ckpt")) status = "interrupted (resumes)";
    }
    total_flops += cell.flops;
    std::printf("%5d  %-34s %10lld %7s %6lld %11lld %8.1f %10s %9s  %s\n", cell.index, cell.name.c_str(),
                static_cast<long long>(cell.params.non_embedding),
                absl::StrCat(cell.config.model().d_model(), "x", cell.config.model().n_layer()).c_str(),
                static_cast<long long>(cell.steps), static_cast<long long>(cell.tokens),
                static_cast<double>(cell.tokens) / static_cast<double>(cell.params.non_embedding),
                absl::StrFormat("%.3g", cell.flops).c_str(), data::FormatDuration(cell.flops / rate).c_str(),
                status.c_str());
  }
  std::printf(
      "total: %.3g FLOPs; %d/%zu done; remaining %.3g FLOPs, about %s at %.1f GFLOP/s (%s)\n", total_flops,
      done, plan.cells.size(), left_flops, data::FormatDuration(left_flops / rate).c_str(), rate / 1e9,
      rate == plan.sweep.assumed_gflops() * 1e9 ? "sweep.assumed_gflops" : "measured on the finished cells");
  std::printf(
      "FLOPs per token: 6 N_non-embedding + 12 d_model k per layer, k = mean keys per query (dense: (T+1)/2;"
      " NAtS planned at density %.2f)\n",
      plan.sweep.nats_planning_density());
  for (const std::string& out : plan.left_out) std::printf("left out: %s\n", out.c_str());
}

int RunSweepCells(const SweepPlan& plan, const SweepRunOptions& options) {
  InstallHandlers();
  const int total = static_cast<int>(plan.cells.size());
  int failed = 0, ran = 0, elsewhere = 0;
  const auto sweep_start = Clock::now();
  for (const SweepCell& cell : plan.cells) {
    if (options.only_index >= 0 && cell.index != options.only_index) continue;
    if (g_signals > 0) break;
    int done = 0;
    for (const SweepCell& c : plan.cells) done += ReadCellSummary(c).finished ? 1 : 0;
    const std::string prefix = absl::StrFormat("[%d/%d done]", done, total);
    if (ReadCellSummary(cell).finished) {
      if (options.only_index >= 0)
        std::printf("%s %s: finished already; skipped\n", prefix.c_str(), cell.name.c_str());
      continue;
    }
    CellLock lock(cell.config.train().run_dir());
    if (!lock.held()) {
      std::printf("%s %s: another process is running it (lock %s/.lock); skipped\n", prefix.c_str(),
                  cell.name.c_str(), cell.config.train().run_dir().c_str());
      ++elsewhere;
      continue;
    }
    absl::StatusOr<std::string> config_path = WriteCellConfig(cell);
    if (!config_path.ok()) {
      std::fprintf(stderr, "sweep: %s\n", std::string(config_path.status().message()).c_str());
      return 1;
    }
    const double rate = FlopsPerSecond(plan);
    const double remaining_after = RemainingFlops(plan, cell.index) - cell.flops;
    std::printf("%s %s: %lld steps, %lld tokens, %.3g FLOPs (N %lld non-embedding); log %s/train.log\n",
                prefix.c_str(), cell.name.c_str(), static_cast<long long>(cell.steps),
                static_cast<long long>(cell.tokens), cell.flops,
                static_cast<long long>(cell.params.non_embedding), cell.config.train().run_dir().c_str());
    std::fflush(stdout);
    const auto start = Clock::now();
    const int code = RunCell(cell, *config_path, options, prefix, rate, remaining_after);
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    RecordAttempt(cell, seconds, code);
    RebuildResults(plan);
    ++ran;
    const CellResult r = ReadCellResult(cell);
    if (r.finished) {
      std::string nats_part;
      if (r.has_nats_stats)
        nats_part = absl::StrFormat(" | kv %.3f | density %.3f", r.kv_fraction, r.mask_density);
      std::printf("%s %s: done in %s | val loss %.4f | %.4f bits/byte%s\n", prefix.c_str(), cell.name.c_str(),
                  data::FormatDuration(seconds).c_str(), r.final_val_loss, r.val_bpb, nats_part.c_str());
    } else if (g_signals > 0) {
      std::printf("%s %s: stopped after %s (exit %d); its checkpoint resumes it\n", prefix.c_str(),
                  cell.name.c_str(), data::FormatDuration(seconds).c_str(), code);
    } else {
      ++failed;
      std::printf("%s %s: FAILED (exit %d) after %s; last lines of %s/train.log:\n%s", prefix.c_str(),
                  cell.name.c_str(), code, data::FormatDuration(seconds).c_str(),
                  cell.config.train().run_dir().c_str(),
                  LogTail(fs::path(cell.config.train().run_dir()) / "train.log", 5).c_str());
    }
    std::fflush(stdout);
  }
  RebuildResults(plan);
  int done = 0;
  for (const SweepCell& c : plan.cells) done += ReadCellSummary(c).finished ? 1 : 0;
  const double seconds = std::chrono::duration<double>(Clock::now() - sweep_start).count();
  std::printf(
      "sweep: %d/%d cells done (%d run now in %s, %d failed, %d left to other processes); results: "
      "%s/results.csv\n",
      done, total, ran, data::FormatDuration(seconds).c_str(), failed, elsewhere, plan.out_dir.c_str());
  if (g_signals > 0) {
    std::printf("sweep: stopped by signal %d; run the same command again to resume\n", g_first_signal);
    return 128 + g_first_signal;
  }
  if (failed > 0) {
    std::printf("sweep: rerun the same command to retry the failed cells (finished ones are skipped)\n");
    return 1;
  }
  return 0;
}

}  // namespace nats::scaling
