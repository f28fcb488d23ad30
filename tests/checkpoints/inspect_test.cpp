// `nats inspect` (launch/inspect_command.cpp) on an intact and on a damaged checkpoint: exit codes and
// the lines a user relies on.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "checkpoints/checkpoint_dir.h"
#include "parallel/local_communicator.h"
#include "runtime/checkpointing.h"
#include "tests/checkpoints/test_state.h"

namespace nats::launch {
int RunInspect(int argc, char** argv);
}  // namespace nats::launch

namespace nats {
namespace {

namespace fs = std::filesystem;

struct InspectRun {
  int code;
  std::string out, err;
};

InspectRun Inspect(std::vector<std::string> args) {
  args.insert(args.begin(), "inspect");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  ::testing::internal::CaptureStdout();
  ::testing::internal::CaptureStderr();
  const int code = launch::RunInspect(static_cast<int>(argv.size()), argv.data());
  std::fflush(stdout);
  std::fflush(stderr);
  InspectRun r{code, ::testing::internal::GetCapturedStdout(), ::testing::internal::GetCapturedStderr()};
  return r;
}

class InspectTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = absl::StrCat(fs::temp_directory_path().string(), "/nats_ckpt_inspect_", ::getpid());
    fs::remove_all(root_);
    parallel::LocalCommunicator comm;
    checkpoint::Manifest header;
    header.set_consumed_samples(4242);
    header.set_dp(1);
    header.set_sp(1);
    header.mutable_config()->mutable_model()->set_d_model(96);
    auto state = checkpoint_testing::SyntheticState(0, 1);
    ASSERT_TRUE(SaveCheckpoint(comm, root_, 41, state, header, "", {}).ok());
    ASSERT_TRUE(SaveCheckpoint(comm, root_, 42, state, header, "", {}).ok());
  }
  void TearDown() override { fs::remove_all(root_); }
  std::string root_;
};

TEST_F(InspectTest, SummarisesAndVerifiesAnIntactCheckpoint) {
  InspectRun r = Inspect({root_});
  EXPECT_EQ(r.code, 0) << r.err;
  for (const char* line : {"step        42\n", "consumed    4242 samples", "world       1 ranks",
                           "complete steps 41, 42 (latest)", "model/big", "float32", "[2600000]", "data/mask",
                           "uint8", "d_model: 96", "verify      OK"}) {
    EXPECT_NE(r.out.find(line), std::string::npos) << "missing \"" << line << "\" in\n" << r.out;
  }
  InspectRun slices = Inspect({checkpoint::StepDirPath(root_, 41), "--slices", "--no_config", "--no_verify"});
  EXPECT_EQ(slices.code, 0);
  EXPECT_NE(slices.out.find("rank_0.bin @64"), std::string::npos) << slices.out;
  EXPECT_EQ(slices.out.find("d_model"), std::string::npos);
  EXPECT_NE(slices.out.find("verify      skipped"), std::string::npos);
}

TEST_F(InspectTest, DamageGivesNonZeroExitAndNamesTensorAndFile) {
  const std::string dir = checkpoint::StepDirPath(root_, 42);
  checkpoint_testing::FlipBit(dir + "/rank_0.bin", 64 + 3);  // the first slice of the first tensor
  InspectRun r = Inspect({dir});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("tensor model/wte: CRC mismatch in " + dir + "/rank_0.bin"), std::string::npos)
      << r.err;
  EXPECT_NE(r.out.find("verify      FAILED: 1 damaged"), std::string::npos) << r.out;

  checkpoint_testing::Truncate(dir + "/rank_0.bin", 1000);
  r = Inspect({dir});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("rank_0.bin is truncated (1000 bytes"), std::string::npos) << r.err;

  EXPECT_EQ(Inspect({root_ + "/nope"}).code, 1);
  EXPECT_EQ(Inspect({}).code, 2);
  EXPECT_EQ(Inspect({root_, "--bogus"}).code, 2);
}

}  // namespace
}  // namespace nats
