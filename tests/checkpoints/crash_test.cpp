// Crash safety of the save protocol with real process deaths: a forked child saves and is killed with
// SIGKILL at each named crash point (checkpoints/crash_point.h) or at random moments; the parent then
// checks that the newest complete checkpoint loads with intact CRCs, that `latest` names a complete
// checkpoint, and that the next save over the debris succeeds. Also the second-signal exit codes.
// Plain process only (no MPI: fork and MPI do not mix).
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <random>

#include "absl/strings/str_cat.h"
#include "checkpoints/checkpoint_dir.h"
#include "checkpoints/crash_point.h"
#include "parallel/local_communicator.h"
#include "runtime/checkpointing.h"
#include "runtime/signals.h"
#include "tests/checkpoints/test_state.h"

namespace nats {
namespace {

namespace fs = std::filesystem;

// The state saved at `step`: its values identify the step, so a load proves which save it came from.
std::vector<StateTensor> StateAt(int64_t step) {
  std::vector<StateTensor> state;
  state.push_back(WholeTensor("model/a", checkpoint_testing::SeededTensor(step, {300, 100}, at::kFloat)));
  state.push_back(
      WholeTensor("model/b", checkpoint_testing::SeededTensor(step + 1000, {2500000}, at::kFloat)));
  state.push_back(WholeTensor("optim/step", at::full({1}, step, at::kLong)));
  return state;
}

// Loads the checkpoint at `path` (root or step dir) with CRCs and checks its values equal StateAt(its step).
int64_t LoadAndCheck(const std::string& path) {
  parallel::LocalCommunicator comm;
  std::vector<StateTensor> targets = StateAt(0);
  for (auto& t : targets) t.tensor = at::zeros_like(t.tensor);
  auto loaded = LoadCheckpoint(comm, path, targets);
  EXPECT_TRUE(loaded.ok()) << loaded.status();
  if (!loaded.ok()) return -1;
  const int64_t step = loaded->manifest.step();
  const auto want = StateAt(step);
  for (size_t i = 0; i < want.size(); ++i)
    EXPECT_TRUE(at::equal(targets[i].tensor, want[i].tensor)) << want[i].name;
  return step;
}

absl::Status Save(const std::string& root, int64_t step, int keep_last) {
  parallel::LocalCommunicator comm;
  checkpoint::Manifest header;
  header.set_consumed_samples(step * 8);
  checkpoint::RetentionPolicy policy;
  policy.keep_last = keep_last;
  return SaveCheckpoint(comm, root, step, StateAt(step), header, CaptureCpuRngState(), policy).status();
}

const char* g_kill_point = nullptr;
int g_kill_countdown = 0;

void KillAtPoint(absl::string_view point) {
  if (point == g_kill_point && --g_kill_countdown <= 0) ::raise(SIGKILL);
}

// Forks a child that saves `step` and dies at the `occurrence`-th pass of `point`; returns after its death.
void SaveAndDieAt(const std::string& root, int64_t step, const char* point, int occurrence) {
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    g_kill_point = point;
    g_kill_countdown = occurrence;
    checkpoint::SetCrashPointHookForTesting(KillAtPoint);
    (void)Save(root, step, /*keep_last=*/1);
    ::_exit(0);  // the point was never reached
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "child did not die at " << point;
}

class CrashTest : public ::testing::Test {
 protected:
  void SetUp() override {
    at::set_num_threads(1);  // no OpenMP pool across fork()
    root_ = absl::StrCat(fs::temp_directory_path().string(), "/nats_ckpt_crash_", ::getpid());
    fs::remove_all(root_);
  }
  void TearDown() override { fs::remove_all(root_); }
  std::string root_;
};

TEST_F(CrashTest, KillAtEveryPointKeepsPreviousCheckpoint) {
  struct Case {
    const char* point;
    int occurrence;
    bool committed;  // step 200 is complete after this point
  };
  const Case cases[] = {
      {"staging_ready", 1, false},     {"blob_slice_written", 1, false},   {"blob_slice_written", 2, false},
      {"blob_synced", 1, false},       {"manifest_tmp_written", 1, false}, {"manifest_written", 1, false},
      {"step_dir_renamed", 1, true},   {"latest_tmp_written", 1, true},    {"latest_written", 1, true},
      {"retention_deleting", 1, true},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(absl::StrCat(c.point, " #", c.occurrence));
    fs::remove_all(root_);
    ASSERT_TRUE(Save(root_, 100, 1).ok());
    SaveAndDieAt(root_, 200, c.point, c.occurrence);

    // `latest` names a complete checkpoint; the newest complete one (not necessarily `latest`) loads with
    // intact CRCs.
    auto latest = checkpoint::ReadLatest(root_);
    ASSERT_TRUE(latest.ok());
    EXPECT_TRUE(fs::exists(checkpoint::StepDirPath(root_, *latest) + "/manifest.pb"));
    const int64_t found = LoadAndCheck(root_);
    if (c.committed) {
      // Once the rename happened the step is the one to resume from, even while `latest` still says 100.
      EXPECT_EQ(LoadAndCheck(checkpoint::StepDirPath(root_, 200)), 200);
      EXPECT_TRUE(*latest == 100 || *latest == 200);
      EXPECT_EQ(found, 200);
    } else {
      EXPECT_EQ(*latest, 100);
      EXPECT_EQ(found, 100);
      EXPECT_FALSE(fs::exists(checkpoint::StepDirPath(root_, 200)));
    }
    // The next save goes over the debris (a stale .partial, or an existing step_200) and wins.
    ASSERT_TRUE(Save(root_, 200, 1).ok());
    EXPECT_EQ(*checkpoint::ReadLatest(root_), 200);
    EXPECT_EQ(LoadAndCheck(root_), 200);
    EXPECT_EQ(*checkpoint::ListCompleteSteps(root_), std::vector<int64_t>{200});
    for (const auto& entry : fs::directory_iterator(root_)) {
      const std::string name = entry.path().filename().string();
      EXPECT_TRUE(name == "latest" || name == checkpoint::StepDirName(200)) << "left behind: " << name;
    }
  }
}

TEST_F(CrashTest, KillAtRandomMomentsNeverLeavesAHalfCheckpoint) {
  std::mt19937 rng(7);
  int64_t next_step = 1;
  int deaths_mid_save = 0;
  for (int round = 0; round < 12; ++round) {
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      for (int64_t step = next_step;; ++step) {
        if (!Save(root_, step, 2).ok()) ::_exit(3);
      }
    }
    ::usleep(std::uniform_int_distribution<int>(20000, 400000)(rng));
    ::kill(pid, SIGKILL);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status)) << "saving child failed with exit code " << WEXITSTATUS(status);
    auto found = checkpoint::FindLatestCheckpoint(root_);
    if (!found.ok()) continue;  // killed before the first commit
    // `latest` may still be missing (killed between the first commit rename and its write); when it
    // exists it names a complete checkpoint.
    if (auto latest = checkpoint::ReadLatest(root_); latest.ok()) {
      EXPECT_TRUE(fs::exists(checkpoint::StepDirPath(root_, *latest) + "/manifest.pb"));
    }
    const int64_t step = LoadAndCheck(root_);
    ASSERT_GE(step, next_step - 1);
    for (const auto& entry : fs::directory_iterator(root_)) {
      deaths_mid_save += entry.path().filename().string().find(".partial") != std::string::npos;
    }
    next_step = step + 1;
  }
  EXPECT_GT(next_step, 1);
  std::printf("random kills: resumed up to step %lld; %d kills left a .partial save behind\n",
              static_cast<long long>(next_step - 1), deaths_mid_save);
}

int ExitCodeAfterSignals(int sig, int count) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    InstallStopSignalHandlers();
    for (int i = 0; i < count; ++i) ::raise(sig);
    ::_exit(StopRequested() && StopSignal() == sig ? 0 : 1);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

TEST(Signals, FirstSignalRequestsStopSecondExitsAtOnce) {
  EXPECT_EQ(ExitCodeAfterSignals(SIGTERM, 1), 0);
  EXPECT_EQ(ExitCodeAfterSignals(SIGTERM, 2), 143);
  EXPECT_EQ(ExitCodeAfterSignals(SIGINT, 2), 130);
  EXPECT_EQ(ExitCodeAfterSignals(SIGUSR1, 1), 0);
}

}  // namespace
}  // namespace nats
