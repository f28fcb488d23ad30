#include "runtime/device_placement.h"

#include <ATen/autocast_mode.h>
#include <torch/cuda.h>
#include <torch/version.h>

#include <cstdlib>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

// LibTorch 2.4 replaced the CUDA-only autocast setters with per-device-type ones (and later dropped the old).
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
#define NATS_AUTOCAST_BY_DEVICE_TYPE 1
#else
#define NATS_AUTOCAST_BY_DEVICE_TYPE 0
#endif

namespace nats {

std::string Placement::Describe() const { return absl::StrCat(device.str(), bf16 ? " bf16" : " fp32"); }

int CudaDeviceCount() {
  return torch::cuda::is_available() ? static_cast<int>(torch::cuda::device_count()) : 0;
}

int LocalRankFromEnvironment() {
  for (const char* var :
       {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID", "PMI_LOCAL_RANK", "LOCAL_RANK"}) {
    const char* value = std::getenv(var);
    int rank = 0;
    if (value != nullptr && absl::SimpleAtoi(value, &rank) && rank >= 0) return rank;
  }
  return 0;
}

absl::StatusOr<Placement> ResolvePlacement(const config::TrainConfig& train, int local_rank,
                                           int cuda_devices) {
  Placement p;
  const bool cuda = train.device() == config::TrainConfig::CUDA ||
                    (train.device() == config::TrainConfig::AUTO && cuda_devices > 0);
  if (cuda && cuda_devices <= 0) {
    return absl::FailedPreconditionError(
        "train.device = CUDA, but LibTorch sees no CUDA device in this process (a CPU-only LibTorch, no GPU, "
        "or CUDA_VISIBLE_DEVICES empty); set train.device = CPU or AUTO, or run where `nvidia-smi` lists a "
        "GPU "
        "with a CUDA build of LibTorch");
  }
  if (cuda) p.device = c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(local_rank % cuda_devices));
  p.bf16 = train.precision() == config::TrainConfig::BF16;
  if (p.bf16 && !cuda) {
    return absl::InvalidArgumentError(
        "train.precision = BF16 needs a CUDA device (bf16 autocast runs on CUDA only here); set "
        "train.precision = FP32 for a CPU run");
  }
  return p;
}

AutocastScope::AutocastScope(bool enabled) : enabled_(enabled) {
  if (!enabled_) return;
#if NATS_AUTOCAST_BY_DEVICE_TYPE
  previous_enabled_ = at::autocast::is_autocast_enabled(at::kCUDA);
  previous_dtype_ = at::autocast::get_autocast_dtype(at::kCUDA);
  at::autocast::set_autocast_enabled(at::kCUDA, true);
  at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
#else
  previous_enabled_ = at::autocast::is_enabled();
  previous_dtype_ = at::autocast::get_autocast_gpu_dtype();
  at::autocast::set_enabled(true);
  at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
#endif
  at::autocast::increment_nesting();
}

AutocastScope::~AutocastScope() {
  if (!enabled_) return;
  // The cast weights are cached per outermost scope; free them when it ends (as torch.autocast does).
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
#if NATS_AUTOCAST_BY_DEVICE_TYPE
  at::autocast::set_autocast_enabled(at::kCUDA, previous_enabled_);
  at::autocast::set_autocast_dtype(at::kCUDA, previous_dtype_);
#else
  at::autocast::set_enabled(previous_enabled_);
  at::autocast::set_autocast_gpu_dtype(previous_dtype_);
#endif
}

}  // namespace nats
