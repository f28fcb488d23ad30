#include "parallel/communicator.h"

#include <ATen/ATen.h>

#include <cstdio>
#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "parallel/local_communicator.h"
#include "parallel/mpi_runtime.h"  // AbortMpiJob: MPI_Abort with MPI, exit without
#if NATS_HAVE_MPI
#include "parallel/mpi_communicator.h"
#endif
#include "parallel/nccl_communicator.h"

#ifndef NATS_HAVE_NCCL
#define NATS_HAVE_NCCL 0  // parallel/CMakeLists.txt defines it to 1 when the NCCL communicator is built
#endif
#ifndef NATS_HAVE_MPI
#define NATS_HAVE_MPI 0  // likewise for the MPI communicator (NATS_WITH_MPI)
#endif

namespace nats::parallel {

std::string_view ReduceOpName(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return "sum";
    case ReduceOp::kAvg:
      return "avg";
    case ReduceOp::kMax:
      return "max";
    case ReduceOp::kMin:
      return "min";
  }
  return "?";
}

absl::StatusOr<Backend> ParseBackend(std::string_view name) {
  const std::string lower = absl::AsciiStrToLower(std::string(name));
  if (lower.empty() || lower == "auto") return Backend::kAuto;
  if (lower == "local") return Backend::kLocal;
  if (lower == "mpi") return Backend::kMpi;
  if (lower == "nccl") return Backend::kNccl;
  return absl::InvalidArgumentError(absl::StrCat("parallel.backend: unknown backend \"", std::string(name),
                                                 "\"; use auto, local, mpi or nccl"));
}

bool LaunchedByMpi() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "PMI_RANK", "MV2_COMM_WORLD_SIZE",
                          "MPI_LOCALNRANKS"}) {
    if (std::getenv(var) != nullptr) return true;
  }
  return false;
}

absl::StatusOr<std::unique_ptr<Communicator>> MakeCommunicator(Backend backend,
                                                               std::optional<int> cuda_device) {
  if (backend == Backend::kAuto) {
    backend = !LaunchedByMpi()                            ? Backend::kLocal
              : cuda_device.has_value() && NATS_HAVE_NCCL ? Backend::kNccl
                                                          : Backend::kMpi;
  }
  switch (backend) {
    case Backend::kLocal:
      return std::unique_ptr<Communicator>(std::make_unique<LocalCommunicator>());
    case Backend::kMpi: {
#if NATS_HAVE_MPI
      auto world = MpiCommunicator::World();
      if (!world.ok()) return world.status();
      return std::unique_ptr<Communicator>(std::move(*world));
#else
      return absl::UnimplementedError(
          "parallel.backend: this process was started by an MPI launcher (or asked for MPI), but the build "
          "has "
          "no MPI (-DNATS_WITH_MPI=OFF); rebuild with Open MPI installed, or run one process without mpirun");
#endif
    }
    case Backend::kNccl: {
#if NATS_HAVE_MPI
      auto world = MpiCommunicator::World();
      if (!world.ok()) return world.status();
      int device = 0;
      if (cuda_device.has_value()) {
        device = *cuda_device;
      } else {
        auto local = (*world)->LocalRank();
        if (!local.ok()) return local.status();
        device = *local;
      }
      return MakeNcclCommunicator(std::unique_ptr<Communicator>(std::move(*world)), device);
#else
      // One process: nothing to bootstrap, so a local communicator carries the unique id and host tensors.
      if (LaunchedByMpi()) {
        return absl::UnimplementedError(
            "parallel.backend=nccl under an MPI launcher needs MPI to share NCCL's unique id, but this build "
            "has "
            "no MPI (-DNATS_WITH_MPI=OFF); rebuild with Open MPI installed");
      }
      return MakeNcclCommunicator(std::make_unique<LocalCommunicator>(), cuda_device.value_or(0));
#endif
    }
    case Backend::kAuto:
      break;
  }
  return absl::InternalError("MakeCommunicator: unreachable backend");
}

#if !NATS_HAVE_NCCL
absl::StatusOr<std::unique_ptr<Communicator>> MakeNcclCommunicator(std::unique_ptr<Communicator>, int) {
  return absl::UnimplementedError(
      "parallel.backend=nccl: this build has no NCCL (CUDA/NCCL were not found at configure time); rebuild "
      "with CUDA and NCCL or use parallel.backend=mpi");
}
#endif

namespace internal {

absl::Status CheckTensor(const at::Tensor& t, absl::string_view what, bool reduce, bool cuda) {
  if (!t.defined()) return absl::InvalidArgumentError(absl::StrCat(what, ": tensor is undefined"));
  if (!t.is_contiguous()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": tensor must be contiguous (call .contiguous())"));
  }
  if (t.is_cuda() != cuda) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": tensor is on ", t.device().str(),
                                                   " but this backend ",
                                                   cuda ? "needs CUDA tensors" : "needs CPU tensors"));
  }
  if (reduce) {
    switch (t.scalar_type()) {
      case at::kFloat:
      case at::kDouble:
      case at::kInt:
      case at::kLong:
      case at::kByte:
        break;
      default:
        return absl::InvalidArgumentError(
            absl::StrCat(what, ": dtype ", c10::toString(t.scalar_type()),
                         " cannot be reduced; use float32, float64, int32, int64 "
                         "or uint8"));
    }
  }
  return absl::OkStatus();
}

std::string TimeoutMessage(absl::string_view what, absl::Duration timeout, absl::Duration waited, int rank,
                           int size, absl::string_view consequence) {
  return absl::StrFormat(
      "%s did not complete within %s on rank %d of %d (waited %.1f s): another rank is missing, stopped, "
      "crashed or called a different collective; %s (raise parallel.timeout_s if a rank is legitimately "
      "slow)",
      what, absl::FormatDuration(timeout), rank, size, absl::ToDoubleSeconds(waited), consequence);
}

absl::Status HandleTimeout(bool abort, const std::string& message) {
  if (!abort) return absl::DeadlineExceededError(message);
  // One line, flushed before MPI_Abort: Open MPI kills every rank right after, stderr buffers included.
  std::fprintf(stderr, "nats: %s; aborting the job (MPI_Abort, exit code %d)\n", message.c_str(),
               kTimeoutExitCode);
  std::fflush(stderr);
  std::fflush(stdout);
  AbortMpiJob(kTimeoutExitCode);
}

absl::Status CheckReduceOp(const at::Tensor& t, ReduceOp op, absl::string_view what) {
  if (op == ReduceOp::kAvg && !at::isFloatingType(t.scalar_type())) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": avg needs a floating dtype, got ",
                                                   c10::toString(t.scalar_type()),
                                                   "; reduce with sum and divide"));
  }
  return absl::OkStatus();
}

}  // namespace internal
}  // namespace nats::parallel
