// nats/fused/row_kernels.h (internal to the fused kernel, nats/fused/)
//
// The elementwise work on one row of a tile: scaling and row maxima, the exponentials of the online softmax,
// and the backward row (P, dS, the mask-entry gradient G and its column sums, docs/method.md 5.2-5.3).
// Elementwise loops (exp, masks, column sums) are plain loops auto-vectorised with target clones (AVX-512 /
// AVX2 / baseline, chosen at load time) and the vectorising float exp of nats/vector_math.h.
#pragma once

#include <cstdint>

#include "nats/fused/tile_meta.h"
#include "nats/vector_math.h"

namespace nats::fused {

// Column sums of G for one row (docs/method.md 5.3), accumulated into a tile's column arrays.
template <typename T>
struct TypeSums {
  T all[kBlock];      // sum over rows i >= j
  T sliding[kBlock];  // rows i - j <= W
  T local[kBlock];    // rows i <= f_j
  T tail[kBlock];     // 1 for local keys after the chunk's last global (they feed R_i), else 0
};

// Multiversioned entry points (row_kernels.cpp), for float and double:
// SoftmaxChunk: one chunk of the forward's online softmax for rows [i0, i0 + rows) of a query tile. In: s
//   [rows x ck.n] (ld kBlock) = raw Q K^T; m, l = running max and sum of the visible entries, acc [rows x d]
//   = unnormalised output; mf, lf (null unless the unmasked normaliser is kept) the same over causal entries.
//   Out: s = exp(scale s - m_new) where visible, else 0; acc rows rescaled to m_new; returns whether any
//   entry of the chunk was visible (else P V can be skipped).
// BackwardRow: in s = raw QK^T row, dp = dO_i . v_j; out s = P (visible softmax), dp = dS = P (dP - Delta),
//   g = G_ij (per `mode`), sums += column sums of G when `sums`; returns sum_c tail_c G_ic.
// Axpy: y += alpha x.
#define NATS_ROW_KERNEL_DECLS(T)                                                                        \
  bool SoftmaxChunk(T* s, int rows, const ChunkKeys& ck, int32_t i0, T scale, T* m, T* l, T* mf, T* lf, \
                    T* acc, int d);                                                                     \
  T BackwardRow(T* s, T* dp, T* g, const ChunkKeys& ck, int32_t i, T scale, T lse_m, T lse_f, T delta,  \
                int mode, int32_t window, TypeSums<T>* sums);                                           \
  void Axpy(int n, T alpha, const T* x, T* y);
NATS_ROW_KERNEL_DECLS(float)
NATS_ROW_KERNEL_DECLS(double)
#undef NATS_ROW_KERNEL_DECLS

}  // namespace nats::fused
