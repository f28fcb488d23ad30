// `nats version` / `nats --version`: what this binary is, for bug reports and for telling two builds apart:
// the commit (read at build time by cmake/GitDescribe.cmake, "-dirty" when tracked files had changes), the
// build type, LibTorch, which communication backends are compiled in, and the compiler.
#include <ATen/Context.h>
#if NATS_HAVE_MPI
#include <mpi.h>
#endif
#include <torch/version.h>

#include <cstdio>
#include <string>

#include "absl/strings/str_cat.h"
#include "launch/commands.h"
#include "launch/flag_parser.h"
#include "launch/git_version.h"

#ifndef NATS_BUILD_TYPE
#define NATS_BUILD_TYPE "unknown"
#endif
#ifndef NATS_CUDA_TOOLKIT_VERSION
#define NATS_CUDA_TOOLKIT_VERSION ""
#endif

namespace nats::launch {
namespace {

constexpr char kHelp[] =
    "usage: nats version   (or nats --version)\n"
    "  prints the git commit the binary was built from (\"-dirty\": with uncommitted changes; \"unknown\":\n"
    "  built outside a git checkout), the build type, the LibTorch version, whether MPI, NCCL and CUDA are\n"
    "  compiled in, and the compiler\n";

std::string Compiler() {
#if defined(__clang__)
  return "clang " __clang_version__;
#elif defined(__GNUC__)
  return "GCC " __VERSION__;
#else
  return "unknown";
#endif
}

// The MPI library of the headers the binary was compiled against (NATS_WITH_MPI, on by default).
std::string MpiLibrary() {
#if !NATS_HAVE_MPI
  return "no (built with -DNATS_WITH_MPI=OFF: one process only)";
#elif defined(OPEN_MPI)
  return absl::StrCat("yes (Open MPI ", OMPI_MAJOR_VERSION, ".", OMPI_MINOR_VERSION, ".",
                      OMPI_RELEASE_VERSION, ")");
#elif defined(MPICH_VERSION)
  return absl::StrCat("yes (MPICH ", MPICH_VERSION, ")");
#else
  return absl::StrCat("yes (MPI standard ", MPI_VERSION, ".", MPI_SUBVERSION, ")");
#endif
}

std::string Nccl() {
#if defined(NATS_HAVE_NCCL)
  return absl::StrCat("yes (", NATS_NCCL_LIBRARY, "; parallel.backend=nccl)");
#else
  return "no (no CUDA toolkit with NCCL found when configuring)";
#endif
}

// Two separate questions: whether the LibTorch we link has its CUDA backend (tensors on a GPU), and whether
// the NCCL communicator was compiled against a CUDA toolkit.
std::string Cuda() {
  const std::string toolkit = NATS_CUDA_TOOLKIT_VERSION;
  return absl::StrCat("LibTorch CUDA backend ", at::hasCUDA() ? "yes" : "no", "; CUDA toolkit ",
                      toolkit.empty() ? "not found" : toolkit);
}

}  // namespace

int RunVersion(int argc, char** argv) {
  ParsedFlags flags;
  if (auto exit_code = ParseCommandFlags(argc, argv, {}, {}, kHelp, &flags)) return *exit_code;
  std::printf("nats %s\n", NATS_GIT_DESCRIBE);
  std::printf("build type  %s\n", NATS_BUILD_TYPE);
  std::printf("LibTorch    %s\n", TORCH_VERSION);
  std::printf("MPI         %s\n", MpiLibrary().c_str());
  std::printf("NCCL        %s\n", Nccl().c_str());
  std::printf("CUDA        %s\n", Cuda().c_str());
  std::printf("compiler    %s\n", Compiler().c_str());
  return 0;
}

}  // namespace nats::launch
