// The row kernels of nats/fused/row_kernels.h: templates, instantiated as multiversioned functions.
#include <ATen/core/Tensor.h>

#include <cmath>
#include <vector>

// The hot loops below must vectorise; the project builds with -O2, where GCC does not vectorise them. After
// the library headers (their code keeps the build's flags) and before ours (the kernel's inline helpers).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O3")
#endif

#include "nats/attention.h"
#include "nats/fused/row_kernels.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__gnu_linux__)
#define NATS_MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define NATS_MULTIVERSION
#endif

namespace nats::fused {

namespace {

// The row reductions (max, sum) keep kLanes independent partial results, combined at the end: a single
// accumulator is a serial chain GCC must not reorder (no -ffast-math here: the masks rely on infinities), so
// it stayed scalar and made the forward slower than the backward; lanes vectorise. The combination order is
// fixed, so results stay deterministic.
constexpr int kLanes = 16;

template <typename T>
inline T MaxOfLanes(const T* lanes) {
  T m = lanes[0];
  for (int l = 1; l < kLanes; ++l) m = lanes[l] > m ? lanes[l] : m;
  return m;
}

template <typename T>
inline T SumOfLanes(const T* lanes) {
  T s = 0;
  for (int l = 0; l < kLanes; ++l) s += lanes[l];
  return s;
}

// body(c, lane) for c in [0, n), lane = c mod kLanes for the full blocks (the tail reuses lanes from 0): the
// inner loop over lanes is what vectorises.
template <typename Body>
inline void ForEachInLanes(int n, const Body& body) {
  int c = 0;
  for (; c + kLanes <= n; c += kLanes) {
    for (int l = 0; l < kLanes; ++l) body(c + l, l);
  }
  for (int l = 0; c < n; ++c, ++l) body(c, l);
}

// Scales the logits in place; returns the max over visible and over causal entries of row i.
template <typename T>
inline void ScaleRowMaxImpl(T* row, const ChunkKeys& ck, int32_t i, T scale, T* max_vis, T* max_causal) {
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
inline T ExpRowVisibleImpl(T* row, const ChunkKeys& ck, int32_t i, T m) {
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
inline T ExpRowCausalSumImpl(const T* row, const ChunkKeys& ck, int32_t i, T m) {
  T sum[kLanes] = {};
  auto body = [&](int c, int l) {
    const T e = FastExp(row[c] - m);
    sum[l] += ck.col[c] <= i ? e : T(0);
  };
  ForEachInLanes(ck.n, body);
  return SumOfLanes(sum);
}

// One backward row. In: s = raw QK^T row, dp = dO_i . v_j. Out: s = P (visible softmax), dp = dS = P (dP -
// Delta), g = G_ij (per `mode`), sums += column sums of G when `sums`; returns sum_c tail_c G_ic.
template <typename T>
inline T BackwardRowImpl(T* s, T* dp, T* g, const ChunkKeys& ck, int32_t i, T scale, T lse_m, T lse_f,
                         T delta, int mode, int32_t window, TypeSums<T>* sums) {
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
#define NATS_ROW_KERNELS(T)                                                                            \
  NATS_MULTIVERSION void ScaleRowMax(T* row, const ChunkKeys& ck, int32_t i, T scale, T* mv, T* mc) {  \
    ScaleRowMaxImpl<T>(row, ck, i, scale, mv, mc);                                                     \
  }                                                                                                    \
  NATS_MULTIVERSION T ExpRowVisible(T* row, const ChunkKeys& ck, int32_t i, T m) {                     \
    return ExpRowVisibleImpl<T>(row, ck, i, m);                                                        \
  }                                                                                                    \
  NATS_MULTIVERSION T ExpRowCausalSum(const T* row, const ChunkKeys& ck, int32_t i, T m) {             \
    return ExpRowCausalSumImpl<T>(row, ck, i, m);                                                      \
  }                                                                                                    \
  NATS_MULTIVERSION T BackwardRow(T* s, T* dp, T* g, const ChunkKeys& ck, int32_t i, T scale, T lse_m, \
                                  T lse_f, T delta, int mode, int32_t window, TypeSums<T>* sums) {     \
    return BackwardRowImpl<T>(s, dp, g, ck, i, scale, lse_m, lse_f, delta, mode, window, sums);        \
  }                                                                                                    \
  NATS_MULTIVERSION void Axpy(int n, T alpha, const T* x, T* y) {                                      \
    for (int c = 0; c < n; ++c) y[c] += alpha * x[c];                                                  \
  }
NATS_ROW_KERNELS(float)
NATS_ROW_KERNELS(double)
#undef NATS_ROW_KERNELS

}  // namespace nats::fused
