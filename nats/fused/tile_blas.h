// nats/fused/tile_blas.h (internal to the fused kernel, nats/fused/)
//
// Inner products: OpenBLAS's cblas_sgemm / cblas_dgemm called directly on tiles (row-major; OpenBLAS turns
// that into the column-major call with the operands swapped, the same kernels as the Fortran sgemm_).
// Measured here (machine shared with other builds, so +-15%) on 64x64x64 tiles: sgemm 60 GFLOP/s on one core,
// at::mm_out 52-64 (no faster, and it needs two tensor wrappers per call); plain loops at -O2 are far slower.
// Tiles are 64x64 so that m*n*k <= 64^3, OpenBLAS's single-thread threshold: 128x128x64 tiles ran at 71
// GFLOP/s alone but two concurrent calls from our two threads made only 37 in total (OpenBLAS starts its own
// threads above the threshold). The tile working set (Q, K, V, dO tiles, S, dP: 6 x 16 KiB at D = 64) sits in
// L2. Every product adds its 2 m n k FLOPs to nats/executed_flops.h.
#pragma once

#include <cblas.h>

#include <cstdint>
#include <type_traits>

#include "nats/executed_flops.h"

namespace nats::fused {

constexpr int kBlock = 64;  // query rows per task and key columns per chunk (nats/fused/forward.cpp)

// Row-major C[m x n] = op(A) op(B) + beta C, counted as executed attention FLOPs.
template <typename T>
void Gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, const T* a, int lda, const T* b,
          int ldb, T beta, T* c, int ldc) {
  if (m == 0 || n == 0) return;
  static_assert(std::is_same<T, float>::value || std::is_same<T, double>::value, "float or double tiles");
  if constexpr (std::is_same<T, float>::value) {
    cblas_sgemm(CblasRowMajor, ta, tb, m, n, k, 1.0f, a, lda, b, ldb, beta, c, ldc);
  } else {
    cblas_dgemm(CblasRowMajor, ta, tb, m, n, k, 1.0, a, lda, b, ldb, beta, c, ldc);
  }
  AddExecutedAttentionFlops(2 * int64_t{m} * n * k);
}

// C = A^T B^T: A [k x m], B [n x k]. S = Q K^T is computed in this form from a transposed Q tile: OpenBLAS
// 0.3.21 runs 64^3 tiles in the column-major (T, T) case at 67-69 GFLOP/s but in the (T, N) case of plain
// A B^T at 53-55 (measured here), and the Q tile is transposed once per task while every chunk reuses it.
template <typename T>
void GemmTT(int m, int n, int k, const T* a, int lda, const T* b, int ldb, T beta, T* c, int ldc) {
  Gemm<T>(CblasTrans, CblasTrans, m, n, k, a, lda, b, ldb, beta, c, ldc);
}

// C = A B: A [m x k], B [k x n].
template <typename T>
void GemmNN(int m, int n, int k, const T* a, int lda, const T* b, int ldb, T beta, T* c, int ldc) {
  Gemm<T>(CblasNoTrans, CblasNoTrans, m, n, k, a, lda, b, ldb, beta, c, ldc);
}

// C = A^T B: A [k x m], B [k x n].
template <typename T>
void GemmTN(int m, int n, int k, const T* a, int lda, const T* b, int ldb, T beta, T* c, int ldc) {
  Gemm<T>(CblasTrans, CblasNoTrans, m, n, k, a, lda, b, ldb, beta, c, ldc);
}

// x [rows x d] (ld d) -> xt [d x rows] (ld kBlock).
template <typename T>
void TransposeTile(const T* x, int rows, int d, T* xt) {
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < d; ++c) xt[c * kBlock + r] = x[r * d + c];
  }
}

}  // namespace nats::fused
