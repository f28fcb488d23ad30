// The GPU launchers of nats/cuda/nats_kernels.h: one CUDA thread per query row (forward, dq, collected
// term) or key column (dk, dv, type-gradient column sums), kRowsPerBlock consecutive rows or columns of one
// head per block, running the functions of nats/cuda/nats_rows.h. fp32 throughout (bf16 inputs are
// converted by the caller); the type sums accumulate in fp64.
//
// What this is and is not: the exact algorithm of the CPU kernel (same visible-key walk and tile skipping,
// same type-gradient sums, GQA inside the block) with plain fp32 FMAs per thread. It is the correctness-first
// GPU path; it does not use shared-memory tiles or tensor cores, so it is far from the GPU's matrix peak.
// The tiled tensor-core kernel should come next and be tested against this one and the CPU reference.
#include <cuda_runtime.h>

#include <cstdint>

#include "nats/cuda/nats_kernels.h"
#include "nats/cuda/nats_rows.h"

namespace nats::rows::gpu {
namespace {

constexpr int kBlock = kRowsPerBlock;

int64_t NumBlocks(int64_t t) { return (t + kBlock - 1) / kBlock; }

__global__ void MetaKernel(Args<float> a) {
  const int64_t bk = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (bk < a.b * a.h_kv) BuildHeadMeta(a, bk);
}

// grid (row blocks, B*H)
template <int kD>
__global__ void ForwardKernel(Args<float> a) {
  const int64_t bh = blockIdx.y, i0 = int64_t{blockIdx.x} * kBlock;
  const int64_t i1 = i0 + kBlock < a.t ? i0 + kBlock : a.t;
  ForwardRow<float, kD>(a, bh, i0 + threadIdx.x, i0, i1);
}

__global__ void DeltaKernel(Args<float> a) {
  const int64_t bh = blockIdx.y, i = int64_t{blockIdx.x} * kBlock + threadIdx.x;
  if (i < a.t) DeltaRow(a, bh, i);
}

template <int kD>
__global__ void DqKernel(Args<float> a) {
  const int64_t bh = blockIdx.y, i0 = int64_t{blockIdx.x} * kBlock;
  const int64_t i1 = i0 + kBlock < a.t ? i0 + kBlock : a.t;
  DqRow<float, kD>(a, bh, i0 + threadIdx.x, i0, i1);
}

// grid (column blocks, B*H_kv)
template <int kD>
__global__ void ColumnKernel(Args<float> a) {
  const int64_t bk = blockIdx.y, j0 = int64_t{blockIdx.x} * kBlock;
  const int64_t i_end = ColumnBlockEnd(a, bk, j0, j0 + kBlock);
  ColumnPass<float, kD>(a, bk, j0 + threadIdx.x, j0, i_end);
}

__global__ void CollectedKernel(Args<float> a) {
  const int64_t bh = blockIdx.y, i = int64_t{blockIdx.x} * kBlock + threadIdx.x;
  CollectedRow(a, bh, i, [&](int64_t at, double value) { atomicAdd(a.type_sums + at, value); });
}

__global__ void FinishKernel(Args<float> a) {
  const int64_t bk = blockIdx.y, j = int64_t{blockIdx.x} * kBlock + threadIdx.x;
  if (j < a.t) FinishTypeGrad(a, bk, j);
}

int LastError() { return static_cast<int>(cudaGetLastError()); }

dim3 Grid(int64_t t, int64_t heads) {
  return dim3(static_cast<unsigned>(NumBlocks(t)), static_cast<unsigned>(heads));
}

}  // namespace

int BuildMeta(const Args<float>& a, void* stream) {
  const int64_t heads = a.b * a.h_kv;
  MetaKernel<<<static_cast<unsigned>((heads + 127) / 128), 128, 0, static_cast<cudaStream_t>(stream)>>>(a);
  return LastError();
}

#define NATS_DISPATCH_HEAD_DIM(d, KERNEL, grid, a, s)     \
  do {                                                    \
    if ((d) <= 32) {                                      \
      KERNEL<32><<<(grid), kBlock, 0, (s)>>>(a);          \
    } else if ((d) <= 64) {                               \
      KERNEL<64><<<(grid), kBlock, 0, (s)>>>(a);          \
    } else if ((d) <= 128) {                              \
      KERNEL<128><<<(grid), kBlock, 0, (s)>>>(a);         \
    } else {                                              \
      KERNEL<kMaxHeadDim><<<(grid), kBlock, 0, (s)>>>(a); \
    }                                                     \
  } while (0)

int Forward(const Args<float>& a, void* stream) {
  const auto s = static_cast<cudaStream_t>(stream);
  NATS_DISPATCH_HEAD_DIM(a.d, ForwardKernel, Grid(a.t, a.b * a.h), a, s);
  return LastError();
}

int Backward(const Args<float>& a, void* stream) {
  const auto s = static_cast<cudaStream_t>(stream);
  DeltaKernel<<<Grid(a.t, a.b * a.h), kBlock, 0, s>>>(a);
  if (int e = LastError()) return e;
  NATS_DISPATCH_HEAD_DIM(a.d, DqKernel, Grid(a.t, a.b * a.h), a, s);
  if (int e = LastError()) return e;
  NATS_DISPATCH_HEAD_DIM(a.d, ColumnKernel, Grid(a.t, a.b * a.h_kv), a, s);
  if (int e = LastError()) return e;
  if (a.type_sums == nullptr) return 0;
  CollectedKernel<<<Grid(a.t, a.b * a.h), kBlock, 0, s>>>(a);
  if (int e = LastError()) return e;
  FinishKernel<<<Grid(a.t, a.b * a.h_kv), kBlock, 0, s>>>(a);
  return LastError();
}

#undef NATS_DISPATCH_HEAD_DIM

const char* ErrorString(int code) { return cudaGetErrorString(static_cast<cudaError_t>(code)); }

}  // namespace nats::rows::gpu
