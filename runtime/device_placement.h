// runtime/device_placement.h
//
// Where a run's tensors live, from train.device and train.precision (runtime/config.proto):
// - ResolvePlacement turns AUTO / CPU / CUDA into one device per rank: AUTO is CUDA when LibTorch sees a GPU
//   and CPU otherwise; a CUDA rank uses local GPU (local rank mod the node's GPUs), as torchrun and
//   Megatron do. CUDA with no GPU, or BF16 on the CPU, is refused with the field to change.
// - LocalRankFromEnvironment reads the launcher's node-local rank (Open MPI, Slurm, MPICH, torchrun names)
//   without initialising MPI, so the device is known before the communicator is built (NCCL needs it).
// - AutocastScope turns on CUDA autocast in bfloat16 for one forward pass when the run is BF16: matmuls in
//   bf16, softmax / norms / losses in fp32 (autocast's own op lists); the weights and AdamW state stay fp32.
// The model, the optimizer state and every batch go to Placement::device (runtime/trainer.cpp); checkpoints
// stage through host memory (runtime/checkpointing.cpp, checkpoints/checkpoint_reader.cpp), so a run saved
// on one kind of device resumes on the other.
#pragma once

#include <c10/core/Device.h>

#include <string>

#include "absl/status/statusor.h"
#include "runtime/config.pb.h"

namespace nats {

struct Placement {
  c10::Device device{c10::kCPU};
  bool bf16 = false;
  bool is_cuda() const { return device.is_cuda(); }
  std::string Describe() const;  // "cpu fp32", "cuda:1 bf16"
};

// The GPUs LibTorch can use in this process (0 with a CPU-only LibTorch).
int CudaDeviceCount();

// The node-local rank from OMPI_COMM_WORLD_LOCAL_RANK, SLURM_LOCALID, MPI_LOCALRANKID, PMI_LOCAL_RANK or
// LOCAL_RANK (first set wins); 0 when none is set (a single process).
int LocalRankFromEnvironment();

// `cuda_devices`: CudaDeviceCount() in the trainer, any count in tests.
absl::StatusOr<Placement> ResolvePlacement(const config::TrainConfig& train, int local_rank,
                                           int cuda_devices);

// CUDA bf16 autocast for the scope's lifetime when `enabled`, restoring the previous state after.
class AutocastScope {
 public:
  explicit AutocastScope(bool enabled);
  ~AutocastScope();
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool enabled_;
  bool previous_enabled_ = false;
  c10::ScalarType previous_dtype_ = c10::ScalarType::Half;
};

}  // namespace nats
