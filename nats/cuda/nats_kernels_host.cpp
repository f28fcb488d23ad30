// The host launchers of nats/cuda/nats_kernels.h: the GPU kernels' functions (nats/cuda/nats_rows.h) in host
// loops over the same blocks, so the CPU tests check the GPU arithmetic. OpenMP over blocks; the collected
// term runs one KV head per thread (its n_rep query heads add into the same columns).
#include <cstdint>
#include <type_traits>

#include "nats/cuda/nats_kernels.h"
#include "nats/cuda/nats_rows.h"

namespace nats::rows::host {
namespace {

constexpr int64_t kBlock = kRowsPerBlock;

int64_t NumBlocks(int64_t t) { return (t + kBlock - 1) / kBlock; }

// The smallest compiled head-dimension bound >= d (the kernels keep kD values per row).
template <typename F>
void WithHeadDim(int64_t d, F&& f) {
  if (d <= 32) return f(std::integral_constant<int, 32>());
  if (d <= 64) return f(std::integral_constant<int, 64>());
  if (d <= 128) return f(std::integral_constant<int, 128>());
  return f(std::integral_constant<int, kMaxHeadDim>());
}

}  // namespace

template <typename S>
void BuildMeta(const Args<S>& a) {
#pragma omp parallel for schedule(static)
  for (int64_t bk = 0; bk < a.b * a.h_kv; ++bk) BuildHeadMeta(a, bk);
}

template <typename S>
void Forward(const Args<S>& a) {
  WithHeadDim(a.d, [&](auto kd) {
    const int64_t blocks = a.b * a.h * NumBlocks(a.t);
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t x = 0; x < blocks; ++x) {
      const int64_t bh = x / NumBlocks(a.t), i0 = (x % NumBlocks(a.t)) * kBlock;
      for (int64_t i = i0; i < i0 + kBlock && i < a.t; ++i) {
        ForwardRow<S, decltype(kd)::value>(a, bh, i, i0, i0 + kBlock < a.t ? i0 + kBlock : a.t);
      }
    }
  });
}

template <typename S>
void Backward(const Args<S>& a) {
  const int64_t rows = a.b * a.h * a.t;
#pragma omp parallel for schedule(static)
  for (int64_t x = 0; x < rows; ++x) DeltaRow(a, x / a.t, x % a.t);
  WithHeadDim(a.d, [&](auto kd) {
    constexpr int kD = decltype(kd)::value;
    const int64_t nb = NumBlocks(a.t);
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t x = 0; x < a.b * a.h * nb; ++x) {
      const int64_t bh = x / nb, i0 = (x % nb) * kBlock, i1 = i0 + kBlock < a.t ? i0 + kBlock : a.t;
      for (int64_t i = i0; i < i1; ++i) DqRow<S, kD>(a, bh, i, i0, i1);
    }
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t x = 0; x < a.b * a.h_kv * nb; ++x) {
      const int64_t bk = x / nb, j0 = (x % nb) * kBlock, j1 = j0 + kBlock < a.t ? j0 + kBlock : a.t;
      const int64_t i_end = ColumnBlockEnd(a, bk, j0, j1);
      for (int64_t j = j0; j < j1; ++j) ColumnPass<S, kD>(a, bk, j, j0, i_end);
    }
  });
  if (a.type_sums == nullptr) return;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t bk = 0; bk < a.b * a.h_kv; ++bk) {
    const int64_t b = bk / a.h_kv, hk = bk % a.h_kv;
    for (int64_t r = 0; r < a.n_rep; ++r) {
      const int64_t bh = b * a.h + hk * a.n_rep + r;
      for (int64_t i = 0; i < a.t; ++i) {
        CollectedRow(a, bh, i, [&](int64_t at, double value) { a.type_sums[at] += value; });
      }
    }
  }
#pragma omp parallel for schedule(static)
  for (int64_t x = 0; x < a.b * a.h_kv * a.t; ++x) FinishTypeGrad(a, x / a.t, x % a.t);
}

template void BuildMeta<float>(const Args<float>&);
template void BuildMeta<double>(const Args<double>&);
template void Forward<float>(const Args<float>&);
template void Forward<double>(const Args<double>&);
template void Backward<float>(const Args<float>&);
template void Backward<double>(const Args<double>&);

}  // namespace nats::rows::host
