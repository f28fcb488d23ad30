// The row kernels of nats/fused/row_kernels.h: templates, instantiated as multiversioned functions.
#include <ATen/core/Tensor.h>

#include <algorithm>
#include <cmath>
#include <vector>

// The hot loops below must vectorise; the project builds with -O2, where GCC does not vectorise them. After
// the library headers (their code keeps the build's flags) and before ours (the kernel's inline helpers).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O3")
#endif

#include "nats/attention.h"
#include "nats/fused/row_kernels.h"

namespace nats::fused {

namespace {

// Scales the logits in place; returns the max over visible and over causal entries of row i.
template <typename T>
NATS_ALWAYS_INLINE void ScaleRowMaxImpl(T* row, const ChunkKeys& ck, int32_t i, T scale, T* max_vis,
                                        T* max_causal) {
  T mv[kLanes], mc[kLanes];
  for (int l = 0; l < kLanes; ++l) mv[l] = mc[l] = NegInf<T>();
  auto body = [&](int c, int l) {
    const T a = row[c] * scale;
    row[c] = a;
    const bool causal = ck.col[c] <= i;
    const bool vis = causal & (i <= ck.last[c]);
    const T av = vis ? a : NegInf<T>();
    const T ac = causal ? a : NegInf<T>();
    mv[l] = av > mv[l] ? av : mv[l];
    mc[l] = ac > mc[l] ? ac : mc[l];
  };
  ForEachInLanes(ck.n, body);
  *max_vis = MaxOfLanes(mv);
  *max_causal = MaxOfLanes(mc);
}

// P = vis ? exp(a - m) : 0 written in place; returns the row sum.
template <typename T>
NATS_ALWAYS_INLINE T ExpRowVisibleImpl(T* row, const ChunkKeys& ck, int32_t i, T m) {
  T sum[kLanes] = {};
  auto body = [&](int c, int l) {
    const bool vis = (ck.col[c] <= i) & (i <= ck.last[c]);
    const T e = FastExp(row[c] - m);
    const T p = vis ? e : T(0);
    row[c] = p;
    sum[l] += p;
  };
  ForEachInLanes(ck.n, body);
  return SumOfLanes(sum);
}

template <typename T>
NATS_ALWAYS_INLINE T ExpRowCausalSumImpl(const T* row, const ChunkKeys& ck, int32_t i, T m) {
  T sum[kLanes] = {};
  auto body = [&](int c, int l) {
    const T e = FastExp(row[c] - m);
    sum[l] += ck.col[c] <= i ? e : T(0);
  };
  ForEachInLanes(ck.n, body);
  return SumOfLanes(sum);
}

// Rows that see the whole chunk (dense layers, and most rows of a NAtS chunk below the window) skip the
// masks: no loads of the key columns, one pass for the max of the raw logits (scale > 0 commutes with max),
// one for P = exp(scale s - m) with its sum.
template <typename T>
NATS_ALWAYS_INLINE T RawRowMax(const T* row, int n) {
  T mx[kLanes];
  for (int l = 0; l < kLanes; ++l) mx[l] = NegInf<T>();
  ForEachInLanes(n, [&](int c, int l) { mx[l] = row[c] > mx[l] ? row[c] : mx[l]; });
  return MaxOfLanes(mx);
}

template <typename T>
NATS_ALWAYS_INLINE T ExpRowFullImpl(T* row, int n, T scale, T m) {
  T sum[kLanes] = {};
  ForEachInLanes(n, [&](int c, int l) {
    const T p = FastExp(row[c] * scale - m);
    row[c] = p;
    sum[l] += p;
  });
  return SumOfLanes(sum);
}

// The online-softmax step of one chunk for all rows of a query tile (the contract in row_kernels.h).
template <typename T>
NATS_ALWAYS_INLINE bool SoftmaxChunkImpl(T* s, int rows, const ChunkKeys& ck, int32_t i0, T scale, T* m, T* l,
                                         T* mf, T* lf, T* acc, int d) {
  bool any = false;
  for (int r = 0; r < rows; ++r) {
    T* row = s + r * kBlock;
    const int32_t i = i0 + r;
    T* a = acc + r * d;
    if (ck.max_col <= i && i <= ck.min_last) {
      const T mv = RawRowMax(row, ck.n) * scale;
      const T mnew = std::max(m[r], mv);
      const T alpha = m[r] == NegInf<T>() ? T(0) : FastExp(m[r] - mnew);
      if (alpha != T(1)) {
        for (int x = 0; x < d; ++x) a[x] *= alpha;
      }
      const T sum = ExpRowFullImpl(row, ck.n, scale, mnew);
      l[r] = l[r] * alpha + sum;
      m[r] = mnew;
      any = true;
      if (mf != nullptr) {
        // Causal entries are the visible ones here; mf >= m (a superset), so the rescale cannot overflow.
        const T mfn = std::max(mf[r], mv);
        lf[r] = lf[r] * (mf[r] == NegInf<T>() ? T(0) : FastExp(mf[r] - mfn)) + sum * FastExp(mnew - mfn);
        mf[r] = mfn;
      }
      continue;
    }
    T mv, mc;
    ScaleRowMaxImpl(row, ck, i, scale, &mv, &mc);
    if (mf != nullptr && mc != NegInf<T>()) {
      const T mnew = std::max(mf[r], mc);
      lf[r] = lf[r] * (mf[r] == NegInf<T>() ? T(0) : FastExp(mf[r] - mnew)) +
              ExpRowCausalSumImpl(row, ck, i, mnew);
      mf[r] = mnew;
    }
    if (mv == NegInf<T>()) {  // nothing visible to this row in the chunk
      for (int c = 0; c < ck.n; ++c) row[c] = T(0);
      continue;
    }
    any = true;
    const T mnew = std::max(m[r], mv);
    const T alpha = m[r] == NegInf<T>() ? T(0) : FastExp(m[r] - mnew);
    if (alpha != T(1)) {
      for (int x = 0; x < d; ++x) a[x] *= alpha;
    }
    l[r] = l[r] * alpha + ExpRowVisibleImpl(row, ck, i, mnew);
    m[r] = mnew;
  }
  return any;
}

// One backward row. In: s = raw QK^T row, dp = dO_i . v_j. Out: s = P (visible softmax), dp = dS = P (dP -
// Delta), g = G_ij (per `mode`), sums += column sums of G when `sums`; returns sum_c tail_c G_ic.
template <typename T>
NATS_ALWAYS_INLINE T BackwardRowImpl(T* s, T* dp, T* g, const ChunkKeys& ck, int32_t i, T scale, T lse_m,
                                     T lse_f, T delta, int mode, int32_t window, TypeSums<T>* sums) {
  const int n = ck.n;
  if (sums == nullptr) {
    for (int c = 0; c < n; ++c) {
      const bool vis = (ck.col[c] <= i) & (i <= ck.last[c]);
      const T e = FastExp(s[c] * scale - lse_m);
      const T p = vis ? e : T(0);
      s[c] = p;
      dp[c] = p * (dp[c] - delta);
    }
    return 0;
  }
  T tail_dot[kLanes] = {};
  auto body = [&](int c, int l) {
    const T a = s[c] * scale;
    const bool causal = ck.col[c] <= i;
    const bool vis = causal & (i <= ck.last[c]);
    const T e = FastExp(a - lse_m);
    T r;
    if (mode == static_cast<int>(MaskGradMode::kExact)) {
      r = e;
    } else if (mode == static_cast<int>(MaskGradMode::kClipped)) {
      r = e < T(1) ? e : T(1);
    } else {
      r = FastExp(a - lse_f);
    }
    const T dd = dp[c] - delta;
    const T p = vis ? e : T(0);
    // A select, not a product: above the diagonal r may overflow.
    const T gij = causal ? r * dd : T(0);
    s[c] = p;
    dp[c] = p * dd;
    g[c] = gij;
    sums->all[c] += gij;
    sums->sliding[c] += (i - ck.col[c] <= window) ? gij : T(0);
    sums->local[c] += (i <= ck.next[c]) ? gij : T(0);
    tail_dot[l] += sums->tail[c] * gij;
  };
  ForEachInLanes(n, body);
  return SumOfLanes(tail_dot);
}

}  // namespace

// Non-template entry points: target_clones does not apply to templates.
#define NATS_ROW_KERNELS(T)                                                                                 \
  NATS_MULTIVERSION bool SoftmaxChunk(T* s, int rows, const ChunkKeys& ck, int32_t i0, T scale, T* m, T* l, \
                                      T* mf, T* lf, T* acc, int d) {                                        \
    return SoftmaxChunkImpl<T>(s, rows, ck, i0, scale, m, l, mf, lf, acc, d);                               \
  }                                                                                                         \
  NATS_MULTIVERSION T BackwardRow(T* s, T* dp, T* g, const ChunkKeys& ck, int32_t i, T scale, T lse_m,      \
                                  T lse_f, T delta, int mode, int32_t window, TypeSums<T>* sums) {          \
    return BackwardRowImpl<T>(s, dp, g, ck, i, scale, lse_m, lse_f, delta, mode, window, sums);             \
  }                                                                                                         \
  NATS_MULTIVERSION void Axpy(int n, T alpha, const T* x, T* y) {                                           \
    for (int c = 0; c < n; ++c) y[c] += alpha * x[c];                                                       \
  }
NATS_ROW_KERNELS(float)
NATS_ROW_KERNELS(double)
#undef NATS_ROW_KERNELS

}  // namespace nats::fused
