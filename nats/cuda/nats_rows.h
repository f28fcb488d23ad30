// nats/cuda/nats_rows.h
//
// The NAtS attention algorithms of the CUDA kernels (docs/method.md 3-5), one query row or one key column at
// a time, written once for both sides: nats/cuda/nats_kernels.cu runs them as CUDA threads, and
// nats/cuda/nats_kernels_host.cpp runs the very same functions in host loops, so the CPU test suite checks
// the GPU's arithmetic against the reference kernel without a GPU (only the launch geometry differs). No
// LibTorch, no CUDA headers: raw pointers and plain arithmetic.
//
// Layout: q, out, dout, dq [B, H, T, D]; k, v, dk, dv [B, H_kv, T, D]; types [B, H_kv, T] int8 TokenType
// values (nullptr: every token global, i.e. dense causal attention); per (batch, head) row vectors [B, H, T];
// per (batch, KV head) column vectors [B, H_kv, T]. "bh" indexes (batch, query head), "bk" (batch, KV head).
//
// Work decomposition (why it looks like this): a CUDA block holds kRowsPerBlock consecutive rows (or columns)
// of one head, and every thread of the block walks the SAME key (or query) sequence, the union of what the
// block's rows can see, testing its own row's visibility per entry. The loads of k_j (q_i) are then the same
// address across a warp (one broadcast transaction), and a block skips every key no row of it can see.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define NATS_HD __host__ __device__ __forceinline__
#else
#define NATS_HD inline
#endif

namespace nats::rows {

constexpr int8_t kGlobal = 0;  // TokenType values (nats/token_type.h)
constexpr int8_t kLocal = 1;
constexpr int kRowsPerBlock = 64;
constexpr int kMaxHeadDim = 256;  // the kernels keep a row of D values per thread
enum GradMode : int { kClipped = 0, kExact = 1, kUnmasked = 2 };  // MaskGradMode values

template <typename S>
struct Args {
  // Inputs.
  const S* q = nullptr;
  const S* k = nullptr;
  const S* v = nullptr;
  const int8_t* types = nullptr;  // nullptr: all global (dense causal)
  // Mask data per (batch, KV head), filled by BuildHeadMeta: L_j, f_j, p_j (last global < j, -1 if none).
  int32_t* last = nullptr;
  int32_t* next = nullptr;
  int32_t* prev = nullptr;
  // Forward outputs (lse_* may be nullptr when not kept; lse_full only with keep_full).
  S* out = nullptr;
  S* lse_m = nullptr;
  S* lse_f = nullptr;
  // Backward inputs and outputs.
  const S* dout = nullptr;
  S* delta = nullptr;  // [B, H, T]: dO_i . O_i
  S* dq = nullptr;
  S* dk = nullptr;
  S* dv = nullptr;
  double* type_sums = nullptr;  // [B, H_kv, T, 4]: all, sliding, local, collected (null: no type gradient)
  S* dtypes = nullptr;          // [B, H_kv, T, 3]
  int64_t b = 0, h = 0, h_kv = 0, n_rep = 1, t = 0, d = 0;
  int64_t window = 0;
  int64_t query_begin = 0;  // rows before it: zero output, no gradient (AttentionOptions::query_begin)
  int grad_mode = kClipped;
  bool keep_full = false;  // also the causal (unmasked) lse: visit every causal key
  double lambda = 0.0;
  S scale = S(1);
};

template <typename S>
NATS_HD S Dot(const S* a, const S* b, int64_t d) {
  S acc = 0;
  for (int64_t x = 0; x < d; ++x) acc += a[x] * b[x];
  return acc;
}

// exp and log that name the right function on either side (std:: on the host, CUDA's overloads on the GPU).
NATS_HD float Exp(float x) {
#if defined(__CUDA_ARCH__)
  return expf(x);
#else
  return std::exp(x);
#endif
}
NATS_HD double Exp(double x) {
#if defined(__CUDA_ARCH__)
  return ::exp(x);
#else
  return std::exp(x);
#endif
}
NATS_HD float Log(float x) {
#if defined(__CUDA_ARCH__)
  return logf(x);
#else
  return std::log(x);
#endif
}
NATS_HD double Log(double x) {
#if defined(__CUDA_ARCH__)
  return ::log(x);
#else
  return std::log(x);
#endif
}

// docs/method.md 3 as intervals: key j is visible to the rows [j, L_j]. Serial over T for one (batch, KV
// head); returns false (and fills nothing further) on a type outside 0..2.
template <typename S>
NATS_HD bool BuildHeadMeta(const Args<S>& a, int64_t bk) {
  const int64_t t = a.t, base = bk * t;
  int32_t* last = a.last + base;
  int32_t* next = a.next + base;
  int32_t* prev = a.prev + base;
  const int8_t* y = a.types ? a.types + base : nullptr;
  int32_t next_global = static_cast<int32_t>(t - 1);  // first global >= j + 1; none -> T-1
  for (int64_t j = t - 1; j >= 0; --j) {
    next[j] = next_global;
    const int8_t tj = y ? y[j] : kGlobal;
    if (tj < 0 || tj > 2) return false;
    if (tj == kGlobal) {
      next_global = static_cast<int32_t>(j);
      last[j] = static_cast<int32_t>(t - 1);
    } else if (tj == kLocal) {
      last[j] = next_global;  // e_j
    } else {
      last[j] = static_cast<int32_t>(j + a.window < t - 1 ? j + a.window : t - 1);
    }
  }
  int32_t prev_global = -1;
  for (int64_t j = 0; j < t; ++j) {
    prev[j] = prev_global;
    if ((y ? y[j] : kGlobal) == kGlobal) prev_global = static_cast<int32_t>(j);
  }
  return true;
}

// Calls f(j) for every key some row of [i0, i1) can see, each once: the globals before i0 - W (walking the
// p chain), the locals after the last global before i0 (no global between them and i0, so e_j >= i0), and
// the keys in [i0 - W, i1) whose interval reaches i0. With `all_causal`, simply 0 .. i1-1.
template <typename S, typename F>
NATS_HD void ForEachBlockKey(const Args<S>& a, int64_t bk, int64_t i0, int64_t i1, bool all_causal, F&& f) {
  if (all_causal || a.types == nullptr) {
    for (int64_t j = 0; j < i1; ++j) f(j);
    return;
  }
  const int32_t* last = a.last + bk * a.t;
  const int32_t* prev = a.prev + bk * a.t;
  const int8_t* y = a.types + bk * a.t;
  const int64_t lo = i0 - a.window > 0 ? i0 - a.window : 0;
  if (lo > 0) {
    for (int64_t g = prev[lo]; g >= 0; g = prev[g]) f(g);
    for (int64_t j = prev[i0] + 1; j < lo; ++j) {
      if (y[j] == kLocal) f(j);
    }
  }
  for (int64_t j = lo; j < i1; ++j) {
    if (last[j] >= i0) f(j);
  }
}

// docs/method.md 4 for row i of head bh (rows [i0, i1) form the block): the masked online softmax over the
// visible keys; with keep_full also log Z^F over every causal key.
template <typename S, int kD>
NATS_HD void ForwardRow(const Args<S>& a, int64_t bh, int64_t i, int64_t i0, int64_t i1) {
  const int64_t d = a.d, bk = (bh / a.h) * a.h_kv + (bh % a.h) / a.n_rep;
  const bool active = i < a.t && i >= a.query_begin;
  const S* qi = a.q + (bh * a.t + (active ? i : 0)) * d;
  const S* kh = a.k + bk * a.t * d;
  const S* vh = a.v + bk * a.t * d;
  const int32_t* last = a.last + bk * a.t;
  S qr[kD], acc[kD];
  for (int x = 0; x < kD; ++x) {
    qr[x] = x < d ? qi[x] * a.scale : S(0);
    acc[x] = 0;
  }
  const S neg_inf = -INFINITY;
  S m = neg_inf, l = 0, mf = neg_inf, lf = 0;
  ForEachBlockKey(a, bk, i0, i1, a.keep_full, [&](int64_t j) {
    if (!active || j > i) return;
    const S* kj = kh + j * d;
    S s = 0;
    for (int x = 0; x < kD; ++x) s += x < d ? qr[x] * kj[x] : S(0);
    if (a.keep_full) {
      const S nf = s > mf ? s : mf;
      lf = lf * Exp(mf - nf) + Exp(s - nf);
      mf = nf;
    }
    if (last[j] < i) return;
    const S* vj = vh + j * d;
    if (s > m) {
      const S c = Exp(m - s);
      l *= c;
      for (int x = 0; x < kD; ++x) acc[x] *= c;
      m = s;
    }
    const S p = Exp(s - m);
    l += p;
    for (int x = 0; x < kD; ++x) acc[x] += x < d ? p * vj[x] : S(0);
  });
  if (i >= a.t) return;
  S* oi = a.out + (bh * a.t + i) * d;
  const S inv = active && l > 0 ? S(1) / l : S(0);
  for (int64_t x = 0; x < d; ++x) oi[x] = acc[x] * inv;
  if (a.lse_m) a.lse_m[bh * a.t + i] = active ? m + Log(l) : S(0);
  if (a.lse_f) a.lse_f[bh * a.t + i] = active ? mf + Log(lf) : S(0);
}

template <typename S>
NATS_HD void DeltaRow(const Args<S>& a, int64_t bh, int64_t i) {
  const int64_t off = (bh * a.t + i) * a.d;
  a.delta[bh * a.t + i] = i >= a.query_begin ? Dot(a.dout + off, a.out + off, a.d) : S(0);
}

// docs/method.md 5.1: dq_i = scale * sum over visible j of P_ij (dP_ij - Delta_i) k_j.
template <typename S, int kD>
NATS_HD void DqRow(const Args<S>& a, int64_t bh, int64_t i, int64_t i0, int64_t i1) {
  const int64_t d = a.d, bk = (bh / a.h) * a.h_kv + (bh % a.h) / a.n_rep;
  const bool active = i < a.t && i >= a.query_begin;
  const int64_t row = bh * a.t + (active ? i : 0);
  const S* qi = a.q + row * d;
  const S* doi = a.dout + row * d;
  const S* kh = a.k + bk * a.t * d;
  const S* vh = a.v + bk * a.t * d;
  const int32_t* last = a.last + bk * a.t;
  const S lse = active ? a.lse_m[row] : S(0), delta = active ? a.delta[row] : S(0);
  S qr[kD], dor[kD], acc[kD];
  for (int x = 0; x < kD; ++x) {
    qr[x] = x < d ? qi[x] * a.scale : S(0);
    dor[x] = x < d ? doi[x] : S(0);
    acc[x] = 0;
  }
  ForEachBlockKey(a, bk, i0, i1, false, [&](int64_t j) {
    if (!active || j > i || last[j] < i) return;
    const S* kj = kh + j * d;
    const S* vj = vh + j * d;
    S s = 0, dp = 0;
    for (int x = 0; x < kD; ++x) {
      s += x < d ? qr[x] * kj[x] : S(0);
      dp += x < d ? dor[x] * vj[x] : S(0);
    }
    const S ds = Exp(s - lse) * (dp - delta);
    for (int x = 0; x < kD; ++x) acc[x] += x < d ? ds * kj[x] : S(0);
  });
  if (i >= a.t) return;
  S* dqi = a.dq + (bh * a.t + i) * d;
  for (int64_t x = 0; x < d; ++x) dqi[x] = acc[x] * a.scale;
}

// docs/method.md 5.1-5.3 for key column j of KV head bk (columns [j0, j1) form the block; rows up to
// i_end, the largest row the block must visit): dk_j, dv_j over the visible rows of the n_rep query heads,
// and with type_sums the column sums of G_ij over all rows, the window rows and the rows up to f_j.
template <typename S, int kD>
NATS_HD void ColumnPass(const Args<S>& a, int64_t bk, int64_t j, int64_t j0, int64_t i_end) {
  const int64_t d = a.d, b = bk / a.h_kv, hk = bk % a.h_kv;
  const bool active = j < a.t;
  const int64_t col = bk * a.t + (active ? j : 0);
  const S* kj = a.k + col * d;
  const S* vj = a.v + col * d;
  const int32_t lj = a.last[col], fj = a.next[col];
  const bool types = a.type_sums != nullptr;
  S kr[kD], vr[kD], dk[kD], dv[kD];
  for (int x = 0; x < kD; ++x) {
    kr[x] = x < d ? kj[x] * a.scale : S(0);
    vr[x] = x < d ? vj[x] : S(0);
    dk[x] = dv[x] = 0;
  }
  double all = 0, sliding = 0, local = 0;
  const int64_t begin = j0 > a.query_begin ? j0 : a.query_begin;
  for (int64_t r = 0; r < a.n_rep; ++r) {
    const int64_t bh = b * a.h + hk * a.n_rep + r;
    for (int64_t i = begin; i <= i_end; ++i) {
      if (!active || i < j || (!types && i > lj)) continue;
      const int64_t row = bh * a.t + i;
      const S* qi = a.q + row * d;
      const S* doi = a.dout + row * d;
      S s = 0, dp = 0;
      for (int x = 0; x < kD; ++x) {
        s += x < d ? kr[x] * qi[x] : S(0);
        dp += x < d ? vr[x] * doi[x] : S(0);
      }
      const S pm = Exp(s - a.lse_m[row]);
      const S ds = dp - a.delta[row];
      if (i <= lj) {
        for (int x = 0; x < kD; ++x) {
          dv[x] += x < d ? pm * doi[x] : S(0);
          dk[x] += x < d ? pm * ds * qi[x] : S(0);
        }
      }
      if (!types) continue;
      S factor = pm;  // kExact: the true G everywhere
      if (a.grad_mode == kClipped) factor = pm < S(1) ? pm : S(1);
      if (a.grad_mode == kUnmasked) factor = Exp(s - a.lse_f[row]);
      const double g = static_cast<double>(factor * ds);
      all += g;
      if (i - j <= a.window) sliding += g;
      if (i <= fj) local += g;
    }
  }
  if (!active) return;
  for (int64_t x = 0; x < d; ++x) {
    a.dk[col * d + x] = dk[x] * a.scale;
    a.dv[col * d + x] = dv[x];
  }
  if (types) {
    double* sums = a.type_sums + col * 4;
    sums[0] = all;
    sums[1] = sliding;
    sums[2] = local;
  }
}

// docs/method.md 5.3 collected term, row i of head bh: C_j += R_i(j) for every j with j < i <= f_j, where
// R_i(j) sums G_ik over the local k in (p_j, j). Those j are [p_i, i); R_i is a running sum over columns in
// ascending order, reset at each global, so the walk starts at the global before p_i. add(x, value) adds
// to type_sums[x] (an atomic on the GPU: rows of one KV head's n_rep query heads meet on the same j).
template <typename S, typename Add>
NATS_HD void CollectedRow(const Args<S>& a, int64_t bh, int64_t i, Add&& add) {
  if (i >= a.t || i < a.query_begin || a.types == nullptr) return;
  const int64_t d = a.d, bk = (bh / a.h) * a.h_kv + (bh % a.h) / a.n_rep;
  const int64_t base = bk * a.t, row = bh * a.t + i;
  const int32_t* next = a.next + base;
  const int32_t* prev = a.prev + base;
  const int8_t* y = a.types + base;
  const int64_t p = prev[i];
  const int64_t start = p < 0 || prev[p] < 0 ? 0 : prev[p];
  const S* qi = a.q + row * d;
  const S* doi = a.dout + row * d;
  const S lse = a.lse_m[row], delta = a.delta[row];
  const S lse_f = a.grad_mode == kUnmasked ? a.lse_f[row] : S(0);
  double run = 0;
  for (int64_t c = start; c < i; ++c) {
    if (i <= next[c] && run != 0) add((base + c) * 4 + 3, run);
    if (y[c] == kGlobal) {
      run = 0;
    } else if (y[c] == kLocal) {
      const S* kc = a.k + (base + c) * d;
      const S* vc = a.v + (base + c) * d;
      const S s = Dot(qi, kc, d) * a.scale;
      const S pm = Exp(s - lse);
      S factor = pm;
      if (a.grad_mode == kClipped) factor = pm < S(1) ? pm : S(1);
      if (a.grad_mode == kUnmasked) factor = Exp(s - lse_f);
      run += static_cast<double>(factor * (Dot(doi, vc, d) - delta));
    }
  }
}

// docs/method.md 5.3-5.4: dtypes_j = (all - collected, local, sliding) plus the regulariser.
template <typename S>
NATS_HD void FinishTypeGrad(const Args<S>& a, int64_t bk, int64_t j) {
  const int64_t col = bk * a.t + j;
  const double* sums = a.type_sums + col * 4;
  double g = sums[0] - sums[3], l = sums[2];
  const double reg = a.lambda * static_cast<double>(a.n_rep) / static_cast<double>(a.t);
  const int8_t y = a.types[col];
  if (y == kGlobal) g += reg * static_cast<double>(a.t - j);
  if (y == kLocal) l += reg * static_cast<double>(a.last[col] - j);  // L_j = e_j
  S* o = a.dtypes + col * 3;
  o[0] = static_cast<S>(g);
  o[1] = static_cast<S>(l);
  o[2] = static_cast<S>(sums[1]);
}

// The largest row the column block [j0, j1) visits: every row when the type gradient is needed, else the
// largest L_j of the block.
template <typename S>
NATS_HD int64_t ColumnBlockEnd(const Args<S>& a, int64_t bk, int64_t j0, int64_t j1) {
  if (a.type_sums != nullptr) return a.t - 1;
  int64_t end = -1;
  const int32_t* last = a.last + bk * a.t;
  for (int64_t j = j0; j < j1 && j < a.t; ++j) end = last[j] > end ? last[j] : end;
  return end;
}

}  // namespace nats::rows
