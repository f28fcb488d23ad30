// train.device / train.precision resolution (runtime/device_placement.h): AUTO, CPU and CUDA with any GPU
// count (the count is an argument, so the CUDA cases run on a machine without one), the local rank modulo
// the node's GPUs, the refusals and their messages, and the launcher variables for the local rank. The
// trainer refusing CUDA where LibTorch sees none is in tests/runtime/cli_errors_test.sh.
#include "runtime/device_placement.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "runtime/config.h"

namespace nats {
namespace {

config::TrainConfig Train(config::TrainConfig::Device device,
                          config::TrainConfig::Precision precision = config::TrainConfig::FP32) {
  config::TrainConfig t;
  t.set_device(device);
  t.set_precision(precision);
  return t;
}

TEST(ResolvePlacement, AutoIsCpuWithoutGpusAndCudaWithThem) {
  auto cpu = ResolvePlacement(Train(config::TrainConfig::AUTO), 0, 0);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  EXPECT_TRUE(cpu->device.is_cpu());
  EXPECT_EQ(cpu->Describe(), "cpu fp32");
  auto cuda = ResolvePlacement(Train(config::TrainConfig::AUTO), 3, 8);
  ASSERT_TRUE(cuda.ok()) << cuda.status();
  EXPECT_EQ(cuda->device, c10::Device(c10::kCUDA, 3));
  EXPECT_EQ(cuda->Describe(), "cuda:3 fp32");
}

TEST(ResolvePlacement, LocalRankWrapsAroundTheNodesGpus) {
  // 16 ranks on a node with 8 GPUs (oversubscribed): rank r on GPU r mod 8.
  for (int local : {0, 7, 8, 13}) {
    auto p = ResolvePlacement(Train(config::TrainConfig::CUDA), local, 8);
    ASSERT_TRUE(p.ok()) << p.status();
    EXPECT_EQ(p->device.index(), local % 8) << "local rank " << local;
  }
}

TEST(ResolvePlacement, CpuStaysCpuWhenGpusExist) {
  auto p = ResolvePlacement(Train(config::TrainConfig::CPU), 1, 4);
  ASSERT_TRUE(p.ok());
  EXPECT_TRUE(p->device.is_cpu());
}

TEST(ResolvePlacement, CudaWithoutGpuIsRefusedWithTheFix) {
  auto p = ResolvePlacement(Train(config::TrainConfig::CUDA), 0, 0);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(p.status().message().find("train.device = CUDA"), std::string::npos) << p.status();
  EXPECT_NE(p.status().message().find("train.device = CPU or AUTO"), std::string::npos) << p.status();
}

TEST(ResolvePlacement, Bf16NeedsCuda) {
  auto cpu = ResolvePlacement(Train(config::TrainConfig::AUTO, config::TrainConfig::BF16), 0, 0);
  ASSERT_FALSE(cpu.ok());
  EXPECT_NE(cpu.status().message().find("train.precision = FP32"), std::string::npos) << cpu.status();
  auto cuda = ResolvePlacement(Train(config::TrainConfig::CUDA, config::TrainConfig::BF16), 0, 1);
  ASSERT_TRUE(cuda.ok()) << cuda.status();
  EXPECT_TRUE(cuda->bf16);
  EXPECT_EQ(cuda->Describe(), "cuda:0 bf16");
}

TEST(LocalRankFromEnvironment, ReadsTheLaunchersVariablesInOrder) {
  const char* vars[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID", "PMI_LOCAL_RANK",
                        "LOCAL_RANK"};
  // Restored at the end: a test run under mpirun has the first one set.
  std::string saved[5];
  bool had[5];
  for (int i = 0; i < 5; ++i) {
    const char* v = std::getenv(vars[i]);
    had[i] = v != nullptr;
    if (had[i]) saved[i] = v;
    unsetenv(vars[i]);
  }
  EXPECT_EQ(LocalRankFromEnvironment(), 0);
  setenv("LOCAL_RANK", "5", 1);
  EXPECT_EQ(LocalRankFromEnvironment(), 5);
  setenv("SLURM_LOCALID", "2", 1);
  EXPECT_EQ(LocalRankFromEnvironment(), 2);  // Slurm's comes before torchrun's
  setenv("OMPI_COMM_WORLD_LOCAL_RANK", "not a number", 1);
  EXPECT_EQ(LocalRankFromEnvironment(), 2);  // unparsable values are skipped
  setenv("OMPI_COMM_WORLD_LOCAL_RANK", "3", 1);
  EXPECT_EQ(LocalRankFromEnvironment(), 3);
  for (int i = 0; i < 5; ++i) {
    if (had[i]) {
      setenv(vars[i], saved[i].c_str(), 1);
    } else {
      unsetenv(vars[i]);
    }
  }
}

TEST(AutocastScope, DisabledScopeChangesNothing) {
  // Enabled scopes need a CUDA LibTorch to mean anything; a disabled one must be a no-op everywhere.
  { AutocastScope scope(false); }
  SUCCEED();
}

}  // namespace
}  // namespace nats
