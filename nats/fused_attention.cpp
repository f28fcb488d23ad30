// Fused NAtS attention on CPU (docs/method.md sections 3-5); contract in nats/fused_attention.h.
//
// Layout of the work
// - Tasks are (batch, query head, query block of kBlock rows), dealt round robin to the threads, largest
//   blocks first (causal blocks differ in cost by up to T/kBlock); static so that results are deterministic.
// - The mask is an interval per key: key j is visible to rows [j, L_j]. Per (batch, KV head) we keep O(T)
//   ints: L_j, f_j (first global > j), the types, the sorted global and local positions.
// - "Visible columns" of a query block [i0, i1): every global < i0 - W, the locals after the last global
//   before i0 (no global in between, so e_j >= i0), and the keys in [i0 - W, i1) with L_j >= i0. The forward
//   and the no-type-gradient backward walk only these, in chunks of kBlock keys gathered into contiguous
//   panels (no copy when a chunk is contiguous). That is both the tile skipping (a key block whose keys are
//   all expired is never touched) and the sparse prefill: cost ~ T x retained keys. With 3% globals nearly
//   every 64-key block holds a global, so block-granular skipping would skip nothing; gathering does.
// - Forward: online softmax per row (running max m, sum l), O accumulated in a kBlock x D tile.
//
// Backward and which tiles it can skip (docs/method.md 5.2-5.3)
// - dq, dk, dv need visible entries only. The type gradient needs G_ij on EVERY causal pair: dL/dg_j sums
//   all rows i >= j (in modes exact, clipped and unmasked G is nonzero on masked entries), so with
//   need_type_grad no causal tile can be skipped; only the three dq/dk/dv products are restricted to the
//   columns some row of the block sees (compacted into a panel of kBlock columns before the products).
//   Per causal tile that is 2 products (S = QK^T, dP = dO V^T) instead of 5; visible columns add 3.
//   Without need_type_grad only visible columns are visited, as in the forward.
// - Column sums of G per key j (summed over the n_rep query heads): all rows (for dL/dg), rows i - j <= W
//   (dL/ds), rows i <= f_j (dL/dl); accumulated per tile, then into per-thread float64 buffers of O(T).
// - Collected term C_j = sum_{i=j+1}^{f_j} R_i(j), where R_i(j) = sum of G_ik over local k in (p_j, j): a
//   running per-row sum over columns in ascending order that is reset at every global column. Each task
//   walks its columns in ascending order, so R_i is a scalar per row carried across chunks. Where a tile
//   has no pair with j < i <= f_j (the common case away from the diagonal and the local segments) R_i is
//   advanced with one masked dot product per row; elsewhere (tiles holding keys of the segment that row
//   block is in, i.e. with f_j >= i0) a scalar scan over the tile adds R_i to C_j: O(T x segment length)
//   scalar work beyond the G tiles themselves, O(T) memory.
// - dk, dv (and the type sums) are accumulated in per-thread buffers and summed at the end, so tasks need
//   no locks; extra memory threads x |k|, i.e. O(T).
//
// Inner products: OpenBLAS sgemm_/dgemm_ called directly on tiles (resolved with dlsym from the BLAS that
// LibTorch itself loaded; at::mm_out on from_blob tensors if the symbol is absent, e.g. a static MKL).
// Measured here (machine shared with other builds, so +-15%) on 64x64x64 tiles: sgemm_ 60 GFLOP/s on one
// core, at::mm_out 52-64 (no faster, and it needs two tensor wrappers per call); plain loops at -O2 are far
// slower. Tiles are 64x64 so that m*n*k <= 64^3, OpenBLAS's single-thread threshold: 128x128x64 tiles ran at
// 71 GFLOP/s alone but two concurrent calls from our two threads made only 37 in total (OpenBLAS starts its
// own threads above the threshold). The tile working set (Q, K, V, dO tiles, S, dP: 6 x 16 KiB at D = 64)
// sits in L2. Elementwise loops (exp, masks, column sums) are plain loops auto-vectorised with target clones
// (AVX-512 / AVX2 / baseline, chosen at load time) and a Cephes-style float exp (rel. error < 1e-7):
// 0.4 ns per element vs 3.3 ns for the scalar std::exp loop the -O2 default build produces.
#include "nats/fused_attention.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "nats/masks.h"
#include "nats/token_type.h"

// The hot loops below must vectorise; the project builds with -O2, where GCC does not vectorise them.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O3")
#endif
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__gnu_linux__)
#define NATS_MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define NATS_MULTIVERSION
#endif

namespace nats {
namespace {

constexpr int kBlock = 64;  // query rows per task and key columns per chunk (see the header comment)
constexpr int8_t kGlobalType = static_cast<int8_t>(TokenType::kGlobal);
constexpr int8_t kLocalType = static_cast<int8_t>(TokenType::kLocal);

// ---------------------------------------------------------------------------------------------------------
// Tile products, row-major: C[m x n] = op(A) op(B) + beta C. BLAS is column-major, so C^T = op(B)^T op(A)^T.

using SgemmFn = void (*)(const char*, const char*, const int*, const int*, const int*, const float*,
                         const float*, const int*, const float*, const int*, const float*, float*,
                         const int*);
using DgemmFn = void (*)(const char*, const char*, const int*, const int*, const int*, const double*,
                         const double*, const int*, const double*, const int*, const double*, double*,
                         const int*);

SgemmFn Sgemm() {
  static const SgemmFn fn = reinterpret_cast<SgemmFn>(dlsym(RTLD_DEFAULT, "sgemm_"));
  return fn;
}
DgemmFn Dgemm() {
  static const DgemmFn fn = reinterpret_cast<DgemmFn>(dlsym(RTLD_DEFAULT, "dgemm_"));
  return fn;
}

template <typename T>
at::Tensor Wrap(const T* p, int rows, int cols, int ld) {
  return at::from_blob(const_cast<T*>(p), {rows, cols}, {ld, 1},
                       at::TensorOptions().dtype(std::is_same<T, float>::value ? at::kFloat : at::kDouble));
}

// Column-major call: C'(n x m) = opB'(n x k) opA'(k x m), where ' is the column-major view of row-major data.
template <typename T>
void BlasCall(char ta, char tb, int n, int m, int k, const T* b, int ldb, const T* a, int lda, T beta, T* c,
              int ldc) {
  const T one = 1;
  if constexpr (std::is_same<T, float>::value) {
    Sgemm()(&ta, &tb, &n, &m, &k, &one, b, &ldb, a, &lda, &beta, c, &ldc);
  } else {
    Dgemm()(&ta, &tb, &n, &m, &k, &one, b, &ldb, a, &lda, &beta, c, &ldc);
  }
}

template <typename T>
bool HaveBlas() {
  if constexpr (std::is_same<T, float>::value) {
    return Sgemm() != nullptr;
  } else {
    return Dgemm() != nullptr;
  }
}

template <typename T>
void Product(const at::Tensor& a, const at::Tensor& b, T beta, T* c, int m, int n, int ldc) {
  at::Tensor out = Wrap(c, m, n, ldc);
  if (beta == T(0)) {
    at::mm_out(out, a, b);
  } else {
    out.addmm_(a, b);
  }
}

// C = A^T B^T: A [k x m], B [n x k]. S = Q K^T is computed in this form from a transposed Q tile: OpenBLAS
// 0.3.21 runs 64^3 tiles in the column-major (T, T) case at 67-69 GFLOP/s but in the (T, N) case of plain A
// B^T at 53-55 (measured here), and the Q tile is transposed once per task while every chunk reuses it.
template <typename T>
void GemmTT(int m, int n, int k, const T* a, int lda, const T* b, int ldb, T beta, T* c, int ldc) {
  if (m == 0 || n == 0) return;
  if (HaveBlas<T>()) return BlasCall<T>('T', 'T', n, m, k, b, ldb, a, lda, beta, c, ldc);
  Product<T>(Wrap(a, k, m, lda).t(), Wrap(b, n, k, ldb).t(), beta, c, m, n, ldc);
}

// x [rows x d] (ld d) -> xt [d x rows] (ld kBlock).
template <typename T>
void TransposeTile(const T* x, int rows, int d, T* xt) {
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < d; ++c) xt[c * kBlock + r] = x[r * d + c];
  }
}

// C = A B: A [m x k], B [k x n].
template <typename T>
void GemmNN(int m, int n, int k, const T* a, int lda, const T* b, int ldb, T beta, T* c, int ldc) {
  if (m == 0 || n == 0) return;
  if (HaveBlas<T>()) return BlasCall<T>('N', 'N', n, m, k, b, ldb, a, lda, beta, c, ldc);
  Product<T>(Wrap(a, m, k, lda), Wrap(b, k, n, ldb), beta, c, m, n, ldc);
}

// C = A^T B: A [k x m], B [k x n].
template <typename T>
void GemmTN(int m, int n, int k, const T* a, int lda, const T* b, int ldb, T beta, T* c, int ldc) {
  if (m == 0 || n == 0) return;
  if (HaveBlas<T>()) return BlasCall<T>('N', 'T', n, m, k, b, ldb, a, lda, beta, c, ldc);
  Product<T>(Wrap(a, k, m, lda).t(), Wrap(b, k, n, ldb), beta, c, m, n, ldc);
}

// ---------------------------------------------------------------------------------------------------------
// Elementwise row kernels. Written as branch-free loops (`&`, not `&&`) so they vectorise.

inline float FastExp(float x) {
  // Cephes expf: round x / ln2 to n, a degree-6 polynomial on the remainder, times 2^n via the exponent bits.
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  float n = x * 1.44269504088896341f;
  n = (n + 12582912.0f) - 12582912.0f;  // round to nearest (1.5 * 2^23 trick)
  float r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return y * scale;
}
inline double FastExp(double x) { return std::exp(x); }  // the double path is for tight tests, not speed

template <typename T>
constexpr T NegInf() {
  return -std::numeric_limits<T>::infinity();
}

// Per-chunk key data, gathered once per chunk.
struct ChunkKeys {
  int n = 0;
  int32_t col[kBlock];
  int32_t last[kBlock];  // L_j: last visible row
  int32_t next[kBlock];  // f_j: first global > j (T-1 if none)
  int8_t type[kBlock];
};

// Scales the logits in place; returns the max over visible and over causal entries of row i.
template <typename T>
inline void ScaleRowMaxImpl(T* row, const ChunkKeys& ck, int32_t i, T scale, T* max_vis, T* max_causal) {
  T mv = NegInf<T>(), mc = NegInf<T>();
  for (int c = 0; c < ck.n; ++c) {
    const T a = row[c] * scale;
    row[c] = a;
    const bool causal = ck.col[c] <= i;
    const bool vis = causal & (i <= ck.last[c]);
    const T av = vis ? a : NegInf<T>();
    const T ac = causal ? a : NegInf<T>();
    mv = av > mv ? av : mv;
    mc = ac > mc ? ac : mc;
  }
  *max_vis = mv;
  *max_causal = mc;
}

// P = vis ? exp(a - m) : 0 written in place; returns the row sum.
template <typename T>
inline T ExpRowVisibleImpl(T* row, const ChunkKeys& ck, int32_t i, T m) {
  T sum = 0;
  for (int c = 0; c < ck.n; ++c) {
    const bool vis = (ck.col[c] <= i) & (i <= ck.last[c]);
    const T e = FastExp(row[c] - m);
    const T p = vis ? e : T(0);
    row[c] = p;
    sum += p;
  }
  return sum;
}

template <typename T>
inline T ExpRowCausalSumImpl(const T* row, const ChunkKeys& ck, int32_t i, T m) {
  T sum = 0;
  for (int c = 0; c < ck.n; ++c) {
    const T e = FastExp(row[c] - m);
    sum += ck.col[c] <= i ? e : T(0);
  }
  return sum;
}

// Column sums of G for one row (docs/method.md 5.3), accumulated into a tile's column arrays.
template <typename T>
struct TypeSums {
  T all[kBlock];      // sum over rows i >= j
  T sliding[kBlock];  // rows i - j <= W
  T local[kBlock];    // rows i <= f_j
  T tail[kBlock];     // 1 for local keys after the chunk's last global (they feed R_i), else 0
};

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
  T tail_dot = 0;
  for (int c = 0; c < n; ++c) {
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
    tail_dot += sums->tail[c] * gij;
  }
  return tail_dot;
}

// Multiversioned non-template entry points (target_clones does not apply to templates).
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

// ---------------------------------------------------------------------------------------------------------
// Per (batch, KV head) mask data: O(T).

struct HeadMeta {
  std::vector<int32_t> last;     // L_j
  std::vector<int32_t> next;     // f_j
  std::vector<int8_t> type;      // TokenType values
  std::vector<int32_t> globals;  // sorted positions
  std::vector<int32_t> locals;   // sorted positions
};

std::vector<HeadMeta> BuildMeta(const at::Tensor& types, int64_t window) {
  const at::Tensor ty = types.to(at::kChar).contiguous();
  const int64_t heads = ty.size(0) * ty.size(1), t = ty.size(2);
  const int8_t* data = ty.data_ptr<int8_t>();
  std::vector<HeadMeta> metas(heads);
  for (int64_t hh = 0; hh < heads; ++hh) {
    HeadMeta& m = metas[hh];
    const int8_t* y = data + hh * t;
    m.type.assign(y, y + t);
    m.last.resize(t);
    m.next.resize(t);
    int64_t next_global_at_or_after = t - 1;  // boundary convention of nats/masks.h: none -> T-1
    for (int64_t j = t - 1; j >= 0; --j) {
      m.next[j] = static_cast<int32_t>(next_global_at_or_after);  // f_j: first global > j
      const int8_t tj = y[j];
      TORCH_CHECK(tj >= 0 && tj < kNumTokenTypes, "NAtS types must hold TokenType values 0..2, got ",
                  static_cast<int>(tj), " at position ", j);
      if (tj == kGlobalType) {
        next_global_at_or_after = j;
        m.last[j] = static_cast<int32_t>(t - 1);
      } else if (tj == kLocalType) {
        m.last[j] = static_cast<int32_t>(next_global_at_or_after);  // e_j
      } else {
        m.last[j] = static_cast<int32_t>(std::min<int64_t>(t - 1, j + window));
      }
    }
    for (int64_t j = 0; j < t; ++j) {
      if (y[j] == kGlobalType) m.globals.push_back(static_cast<int32_t>(j));
      if (y[j] == kLocalType) m.locals.push_back(static_cast<int32_t>(j));
    }
  }
  return metas;
}

// The keys some row of [i0, i1) can see, ascending (see the file comment).
void VisibleColumns(const HeadMeta& m, int32_t i0, int32_t i1, int64_t window, std::vector<int32_t>* cols) {
  cols->clear();
  const int32_t lo = static_cast<int32_t>(std::max<int64_t>(0, int64_t{i0} - window));
  // Last global before i0: every local after it is still live at row i0.
  auto g_end = std::lower_bound(m.globals.begin(), m.globals.end(), i0);
  const int32_t prev_global = g_end == m.globals.begin() ? -1 : *(g_end - 1);
  for (auto it = m.globals.begin(); it != m.globals.end() && *it < lo; ++it) cols->push_back(*it);
  for (auto it = std::upper_bound(m.locals.begin(), m.locals.end(), prev_global);
       it != m.locals.end() && *it < lo; ++it) {
    cols->push_back(*it);
  }
  for (int32_t j = lo; j < i1; ++j) {
    if (m.last[j] >= i0) cols->push_back(j);
  }
}

void AllCausalColumns(int32_t i1, std::vector<int32_t>* cols) {
  cols->resize(i1);
  for (int32_t j = 0; j < i1; ++j) (*cols)[j] = j;
}

void FillChunk(const HeadMeta& m, const int32_t* cols, int n, ChunkKeys* ck) {
  ck->n = n;
  for (int c = 0; c < n; ++c) {
    const int32_t j = cols[c];
    ck->col[c] = j;
    ck->last[c] = m.last[j];
    ck->next[c] = m.next[j];
    ck->type[c] = m.type[j];
  }
}

bool Contiguous(const ChunkKeys& ck) { return ck.n > 0 && ck.col[ck.n - 1] - ck.col[0] == ck.n - 1; }

// Rows of x [T, D] at the chunk's columns, contiguous: a pointer into x when they already are, else a copy.
template <typename T>
const T* GatherRows(const T* x, const int32_t* cols, int n, bool contiguous, int d, T* buffer) {
  if (contiguous) return x + static_cast<int64_t>(cols[0]) * d;
  for (int c = 0; c < n; ++c)
    std::memcpy(buffer + c * d, x + static_cast<int64_t>(cols[c]) * d, sizeof(T) * d);
  return buffer;
}

struct Dims {
  int64_t b, h, h_kv, n_rep, t, d;
};

Dims CheckShapes(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& types) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "NAtS attention expects [B, H, T, D] q, k, v");
  TORCH_CHECK(k.sizes() == v.sizes(), "k and v must have the same shape, got ", k.sizes(), " and ",
              v.sizes());
  Dims dims{q.size(0), q.size(1), k.size(1), 0, q.size(2), q.size(3)};
  TORCH_CHECK(k.size(0) == dims.b && k.size(2) == dims.t && k.size(3) == dims.d, "q ", q.sizes(), " and k ",
              k.sizes(), " disagree on batch, length or head size");
  TORCH_CHECK(dims.h % dims.h_kv == 0, "n_head (", dims.h, ") must be a multiple of n_kv_head (", dims.h_kv,
              ")");
  TORCH_CHECK(dims.t < (int64_t{1} << 30), "fused NAtS attention supports T < 2^30, got ", dims.t);
  dims.n_rep = dims.h / dims.h_kv;
  TORCH_CHECK(
      types.dim() == 3 && types.size(0) == dims.b && types.size(1) == dims.h_kv && types.size(2) == dims.t,
      "types must be [B, H_kv, T] = [", dims.b, ", ", dims.h_kv, ", ", dims.t, "], got ", types.sizes());
  return dims;
}

at::ScalarType ComputeType(const at::Tensor& q) {
  return q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// Runs fn(task, slot) for task in [0, n) on at::get_num_threads() threads; slot < NumSlots().
// Slot s takes tasks s, s + slots, s + 2 slots, ... (tasks come largest first, so the round robin balances
// well). A static assignment rather than a shared counter: each slot's dk/dv/type buffers then receive the
// same tasks in the same order on every run, so gradients are bit-identical for a given thread count, which
// exact resume (checkpoints) relies on.
int NumSlots() { return std::max(1, at::get_num_threads()); }

template <typename Fn>
void ForEachTask(int64_t n, const Fn& fn) {
  const int64_t slots = NumSlots();
  at::parallel_for(0, slots, 1, [&](int64_t begin, int64_t end) {
    for (int64_t slot = begin; slot < end; ++slot) {
      for (int64_t task = slot; task < n; task += slots) fn(task, slot);
    }
  });
}

// Task -> (batch*head, query block), largest (latest) blocks first.
struct TaskIndex {
  int64_t bh, qb;
};
TaskIndex Decode(int64_t task, const Dims& dims, int64_t n_blocks) {
  const int64_t bhs = dims.b * dims.h;
  return {task % bhs, n_blocks - 1 - task / bhs};
}

// ---------------------------------------------------------------------------------------------------------
// Forward.

template <typename T>
void ForwardKernel(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                   const std::vector<HeadMeta>& metas, const Dims& dims, int64_t window, bool all_causal,
                   int64_t query_begin, at::Tensor& out, T* lse, T* lse_full) {
  const int d = static_cast<int>(dims.d);
  const int64_t t = dims.t;
  const int64_t n_blocks = (t + kBlock - 1) / kBlock;
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(dims.d)));
  const T* qp = q.data_ptr<T>();
  const T* kp = k.data_ptr<T>();
  const T* vp = v.data_ptr<T>();
  T* op = out.data_ptr<T>();
  ForEachTask(dims.b * dims.h * n_blocks, [&](int64_t task, int64_t /*slot*/) {
    const TaskIndex ti = Decode(task, dims, n_blocks);
    const int64_t bhk = (ti.bh / dims.h) * dims.h_kv + (ti.bh % dims.h) / dims.n_rep;
    const HeadMeta& meta = metas[bhk];
    const int32_t i0 = static_cast<int32_t>(ti.qb * kBlock);
    const int32_t i1 = static_cast<int32_t>(std::min<int64_t>(t, i0 + kBlock));
    if (i1 <= query_begin) return;  // rows nobody reads (out was zero-filled)
    const int rows = i1 - i0;
    const T* qb = qp + (ti.bh * t + i0) * d;
    const T* kh = kp + bhk * t * d;
    const T* vh = vp + bhk * t * d;
    std::vector<int32_t> cols;
    if (all_causal) {
      AllCausalColumns(i1, &cols);
    } else {
      VisibleColumns(meta, i0, i1, window, &cols);
    }
    std::vector<T> acc(static_cast<size_t>(rows) * d, T(0)), s(kBlock * kBlock), kbuf(kBlock * d),
        vbuf(kBlock * d), qt(static_cast<size_t>(d) * kBlock);
    TransposeTile(qb, rows, d, qt.data());
    std::vector<T> m(rows, NegInf<T>()), l(rows, T(0)), mf(rows, NegInf<T>()), lf(rows, T(0));
    ChunkKeys ck;
    for (size_t c0 = 0; c0 < cols.size(); c0 += kBlock) {
      const int nc = static_cast<int>(std::min<size_t>(kBlock, cols.size() - c0));
      FillChunk(meta, cols.data() + c0, nc, &ck);
      const bool contiguous = Contiguous(ck);
      const T* kc = GatherRows(kh, ck.col, nc, contiguous, d, kbuf.data());
      GemmTT<T>(rows, nc, d, qt.data(), kBlock, kc, d, T(0), s.data(), kBlock);
      bool any = false;
      for (int r = 0; r < rows; ++r) {
        T* row = s.data() + r * kBlock;
        const int32_t i = i0 + r;
        T mv, mc;
        ScaleRowMax(row, ck, i, scale, &mv, &mc);
        if (all_causal && mc != NegInf<T>()) {
          const T mnew = std::max(mf[r], mc);
          lf[r] = lf[r] * (mf[r] == NegInf<T>() ? T(0) : FastExp(mf[r] - mnew)) +
                  ExpRowCausalSum(row, ck, i, mnew);
          mf[r] = mnew;
        }
        if (mv == NegInf<T>()) {  // nothing visible to this row in the chunk
          std::fill(row, row + nc, T(0));
          continue;
        }
        any = true;
        const T mnew = std::max(m[r], mv);
        const T alpha = m[r] == NegInf<T>() ? T(0) : FastExp(m[r] - mnew);
        if (alpha != T(1)) {
          T* a = acc.data() + r * d;
          for (int x = 0; x < d; ++x) a[x] *= alpha;
        }
        l[r] = l[r] * alpha + ExpRowVisible(row, ck, i, mnew);
        m[r] = mnew;
      }
      if (!any) continue;
      const T* vc = GatherRows(vh, ck.col, nc, contiguous, d, vbuf.data());
      GemmNN<T>(rows, d, nc, s.data(), kBlock, vc, d, T(1), acc.data(), d);
    }
    T* ob = op + (ti.bh * t + i0) * d;
    for (int r = 0; r < rows; ++r) {
      // The diagonal is always visible, so l > 0.
      const T inv = T(1) / l[r];
      for (int x = 0; x < d; ++x) ob[r * d + x] = acc[r * d + x] * inv;
      if (lse != nullptr) lse[ti.bh * t + i0 + r] = m[r] + std::log(l[r]);
      if (lse_full != nullptr) lse_full[ti.bh * t + i0 + r] = mf[r] + std::log(lf[r]);
    }
  });
}

template <typename T>
FusedForwardResult ForwardTyped(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const at::Tensor& types, int64_t window, bool keep_lse, bool keep_full_lse,
                                int64_t query_begin, const Dims& dims) {
  const at::ScalarType st = ComputeType(q);
  const at::Tensor qc = q.to(st).contiguous(), kc = k.to(st).contiguous(), vc = v.to(st).contiguous();
  const std::vector<HeadMeta> metas = BuildMeta(types, window);
  // Skipped rows (query_begin) keep these zeros.
  auto alloc = [&](at::IntArrayRef shape) {
    return query_begin > 0 ? at::zeros(shape, qc.options()) : at::empty(shape, qc.options());
  };
  at::Tensor out = alloc(qc.sizes());
  FusedForwardResult result;
  if (keep_lse) result.lse_masked = alloc({dims.b, dims.h, dims.t});
  if (keep_full_lse) result.lse_full = alloc({dims.b, dims.h, dims.t});
  ForwardKernel<T>(qc, kc, vc, metas, dims, window, keep_full_lse, query_begin, out,
                   keep_lse ? result.lse_masked.data_ptr<T>() : nullptr,
                   keep_full_lse ? result.lse_full.data_ptr<T>() : nullptr);
  result.out = out.to(q.scalar_type());
  return result;
}

// ---------------------------------------------------------------------------------------------------------
// Backward.

template <typename T>
struct SlotBuffers {
  std::vector<T> dk, dv;                               // [B, H_kv, T, D]
  std::vector<double> all, sliding, local, collected;  // [B, H_kv, T]
};

// Columns of P and dS that some row of the block sees, compacted, waiting for the three products.
template <typename T>
struct Panel {
  int n = 0;
  int32_t col[kBlock];
  std::vector<T> p, ds;  // [rows x kBlock], ld kBlock
};

template <typename T>
void BackwardKernel(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
                    const at::Tensor& dout, const T* lse, const T* lse_full,
                    const std::vector<HeadMeta>& metas, const Dims& dims, const AttentionOptions& options,
                    bool need_type_grad, at::Tensor& dq, std::vector<SlotBuffers<T>>& slots) {
  const int d = static_cast<int>(dims.d);
  const int64_t t = dims.t;
  const int64_t n_blocks = (t + kBlock - 1) / kBlock;
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(dims.d)));
  const int mode = static_cast<int>(options.grad_mode);
  const int32_t window = static_cast<int32_t>(std::min<int64_t>(options.window, t));
  const T* qp = q.data_ptr<T>();
  const T* kp = k.data_ptr<T>();
  const T* vp = v.data_ptr<T>();
  const T* op = out.data_ptr<T>();
  const T* dop = dout.data_ptr<T>();
  T* dqp = dq.data_ptr<T>();
  ForEachTask(dims.b * dims.h * n_blocks, [&](int64_t task, int64_t slot) {
    SlotBuffers<T>& buf = slots[slot];
    const TaskIndex ti = Decode(task, dims, n_blocks);
    const int64_t bhk = (ti.bh / dims.h) * dims.h_kv + (ti.bh % dims.h) / dims.n_rep;
    const HeadMeta& meta = metas[bhk];
    const int32_t i0 = static_cast<int32_t>(ti.qb * kBlock);
    const int32_t i1 = static_cast<int32_t>(std::min<int64_t>(t, i0 + kBlock));
    // Rows before query_begin have dO = 0, so every term they would add is exactly zero (dq was zero-filled).
    if (i1 <= options.query_begin) return;
    const int rows = i1 - i0;
    const int64_t row_off = (ti.bh * t + i0) * d;
    const T* qb = qp + row_off;
    const T* dob = dop + row_off;
    const T* kh = kp + bhk * t * d;
    const T* vh = vp + bhk * t * d;
    T* dkh = buf.dk.data() + bhk * t * d;
    T* dvh = buf.dv.data() + bhk * t * d;

    std::vector<T> delta(rows), lse_m(rows), lse_f(rows, T(0)), running(rows, T(0));  // running = R_i
    for (int r = 0; r < rows; ++r) {
      T acc = 0;
      for (int x = 0; x < d; ++x) acc += dob[r * d + x] * op[row_off + r * d + x];
      delta[r] = acc;  // Delta_i = dO_i . O_i
      lse_m[r] = lse[ti.bh * t + i0 + r];
      if (lse_full != nullptr) lse_f[r] = lse_full[ti.bh * t + i0 + r];
    }
    std::vector<int32_t> cols;
    if (need_type_grad) {
      AllCausalColumns(i1, &cols);
    } else {
      VisibleColumns(meta, i0, i1, options.window, &cols);
    }
    std::vector<T> s(kBlock * kBlock), dp(kBlock * kBlock), g(kBlock * kBlock), kbuf(kBlock * d),
        vbuf(kBlock * d), tmp(kBlock * d), dq_acc(static_cast<size_t>(rows) * d, T(0)),
        qt(static_cast<size_t>(d) * kBlock), dot(static_cast<size_t>(d) * kBlock);
    TransposeTile(qb, rows, d, qt.data());
    TransposeTile(dob, rows, d, dot.data());
    Panel<T> panel;
    panel.p.resize(kBlock * kBlock);
    panel.ds.resize(kBlock * kBlock);
    TypeSums<T> sums;
    ChunkKeys ck;

    // dQ += dS K, dK += dS^T Q, dV += P^T dO over `n` columns; dS, P have leading dimension kBlock.
    auto products = [&](const T* p_mat, const T* ds_mat, const int32_t* pcols, int n, bool contiguous,
                        const T* kc) {
      GemmNN<T>(rows, d, n, ds_mat, kBlock, kc, d, T(1), dq_acc.data(), d);
      if (contiguous) {
        GemmTN<T>(n, d, rows, ds_mat, kBlock, qb, d, T(1), dkh + int64_t{pcols[0]} * d, d);
        GemmTN<T>(n, d, rows, p_mat, kBlock, dob, d, T(1), dvh + int64_t{pcols[0]} * d, d);
        return;
      }
      GemmTN<T>(n, d, rows, ds_mat, kBlock, qb, d, T(0), tmp.data(), d);
      for (int c = 0; c < n; ++c) Axpy(d, T(1), tmp.data() + c * d, dkh + int64_t{pcols[c]} * d);
      GemmTN<T>(n, d, rows, p_mat, kBlock, dob, d, T(0), tmp.data(), d);
      for (int c = 0; c < n; ++c) Axpy(d, T(1), tmp.data() + c * d, dvh + int64_t{pcols[c]} * d);
    };
    auto flush_panel = [&]() {
      if (panel.n == 0) return;
      ChunkKeys pk;
      pk.n = panel.n;
      std::copy(panel.col, panel.col + panel.n, pk.col);
      const bool contiguous = Contiguous(pk);
      const T* kc = GatherRows(kh, panel.col, panel.n, contiguous, d, kbuf.data());
      products(panel.p.data(), panel.ds.data(), panel.col, panel.n, contiguous, kc);
      panel.n = 0;
    };

    for (size_t c0 = 0; c0 < cols.size(); c0 += kBlock) {
      const int nc = static_cast<int>(std::min<size_t>(kBlock, cols.size() - c0));
      FillChunk(meta, cols.data() + c0, nc, &ck);
      const bool contiguous = Contiguous(ck);
      const T* kc = GatherRows(kh, ck.col, nc, contiguous, d, kbuf.data());
      const T* vc = GatherRows(vh, ck.col, nc, contiguous, d, vbuf.data());
      GemmTT<T>(rows, nc, d, qt.data(), kBlock, kc, d, T(0), s.data(), kBlock);
      GemmTT<T>(rows, nc, d, dot.data(), kBlock, vc, d, T(0), dp.data(), kBlock);

      // docs/method.md 5.3 bookkeeping for this chunk (contiguous columns when need_type_grad).
      bool has_global = false, scan = false;
      if (need_type_grad) {
        int last_global = -1;
        int32_t max_next = -1;
        for (int c = 0; c < nc; ++c) {
          if (ck.type[c] == kGlobalType) last_global = c;
          max_next = std::max(max_next, ck.next[c]);
        }
        has_global = last_global >= 0;
        for (int c = 0; c < nc; ++c) {
          sums.all[c] = sums.sliding[c] = sums.local[c] = 0;
          sums.tail[c] = (ck.type[c] == kLocalType && c > last_global) ? T(1) : T(0);
        }
        // Some pair j < i <= f_j in this tile: the collected term needs the exact per-column scan.
        scan = max_next >= i0 && i1 - 1 > ck.col[0];
      }
      T collected[kBlock] = {};
      for (int r = 0; r < rows; ++r) {
        const int32_t i = i0 + r;
        T* srow = s.data() + r * kBlock;
        T* dprow = dp.data() + r * kBlock;
        T* grow = g.data() + r * kBlock;
        const T tail_dot = BackwardRow(srow, dprow, grow, ck, i, scale, lse_m[r], lse_f[r], delta[r], mode,
                                       window, need_type_grad ? &sums : nullptr);
        if (!need_type_grad) continue;
        if (scan) {
          // docs/method.md 5.3 collected term: C_j += R_i(j) for j < i <= f_j; R_i sums local G_ik since the
          // last global.
          T run = running[r];
          for (int c = 0; c < nc; ++c) {
            if (ck.col[c] < i && i <= ck.next[c]) collected[c] += run;
            if (ck.type[c] == kLocalType) {
              run += grow[c];
            } else if (ck.type[c] == kGlobalType) {
              run = 0;
            }
          }
          running[r] = run;
        } else {
          running[r] = (has_global ? T(0) : running[r]) + tail_dot;
        }
      }
      if (need_type_grad) {
        const int64_t base = bhk * t;
        for (int c = 0; c < nc; ++c) {
          const int64_t j = base + ck.col[c];
          buf.all[j] += sums.all[c];
          buf.sliding[j] += sums.sliding[c];
          buf.local[j] += sums.local[c];
          buf.collected[j] += collected[c];
        }
      }

      // dq, dk, dv from the columns some row of the block sees.
      int n_seen = 0;
      for (int c = 0; c < nc; ++c) n_seen += ck.last[c] >= i0 ? 1 : 0;
      if (n_seen == 0) continue;
      if (n_seen == nc && panel.n == 0) {
        products(s.data(), dp.data(), ck.col, nc, contiguous, kc);
        continue;
      }
      for (int c = 0; c < nc; ++c) {
        if (ck.last[c] < i0) continue;
        const int pc = panel.n++;
        panel.col[pc] = ck.col[c];
        for (int r = 0; r < rows; ++r) {
          panel.p[r * kBlock + pc] = s[r * kBlock + c];
          panel.ds[r * kBlock + pc] = dp[r * kBlock + c];
        }
        if (panel.n == kBlock) flush_panel();
      }
    }
    flush_panel();
    T* dqb = dqp + row_off;
    for (int64_t x = 0; x < int64_t{rows} * d; ++x) dqb[x] = dq_acc[x] * scale;
  });
}

template <typename T>
FusedGradients BackwardTyped(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             const at::Tensor& types, const FusedForwardResult& forward,
                             const at::Tensor& dout, const AttentionOptions& options, bool need_type_grad,
                             const Dims& dims) {
  const at::ScalarType st = ComputeType(q);
  const at::Tensor qc = q.to(st).contiguous(), kc = k.to(st).contiguous(), vc = v.to(st).contiguous();
  const at::Tensor oc = forward.out.to(st).contiguous(), doc = dout.to(st).contiguous();
  const at::Tensor lse = forward.lse_masked.to(st).contiguous();
  const bool full = need_type_grad && options.grad_mode == MaskGradMode::kUnmasked;
  TORCH_CHECK(!full || forward.lse_full.defined(), "the unmasked grad mode needs the forward's causal lse");
  const at::Tensor lse_full = full ? forward.lse_full.to(st).contiguous() : at::Tensor();
  const std::vector<HeadMeta> metas = BuildMeta(types, options.window);

  const int n_slots = NumSlots();
  const size_t kv_size = static_cast<size_t>(dims.b * dims.h_kv * dims.t * dims.d);
  const size_t col_size = need_type_grad ? static_cast<size_t>(dims.b * dims.h_kv * dims.t) : 0;
  std::vector<SlotBuffers<T>> slots(n_slots);
  at::parallel_for(0, n_slots, 1, [&](int64_t begin, int64_t end) {
    for (int64_t sl = begin; sl < end; ++sl) {  // first touch by the thread that uses the buffer
      slots[sl].dk.assign(kv_size, T(0));
      slots[sl].dv.assign(kv_size, T(0));
      for (auto* vec : {&slots[sl].all, &slots[sl].sliding, &slots[sl].local, &slots[sl].collected}) {
        vec->assign(col_size, 0.0);
      }
    }
  });
  at::Tensor dq =
      options.query_begin > 0 ? at::zeros(qc.sizes(), qc.options()) : at::empty(qc.sizes(), qc.options());
  BackwardKernel<T>(qc, kc, vc, oc, doc, lse.data_ptr<T>(), full ? lse_full.data_ptr<T>() : nullptr, metas,
                    dims, options, need_type_grad, dq, slots);

  FusedGradients grads;
  at::Tensor dk = at::empty(kc.sizes(), kc.options()), dv = at::empty(vc.sizes(), vc.options());
  T* dkp = dk.data_ptr<T>();
  T* dvp = dv.data_ptr<T>();
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(dims.d)));
  at::parallel_for(0, static_cast<int64_t>(kv_size), 1 << 14, [&](int64_t begin, int64_t end) {
    for (int64_t x = begin; x < end; ++x) {
      T a = 0, b = 0;
      for (const auto& sl : slots) {
        a += sl.dk[x];
        b += sl.dv[x];
      }
      dkp[x] = a * scale;
      dvp[x] = b;
    }
  });
  grads.dq = dq.to(q.scalar_type());
  grads.dk = dk.to(k.scalar_type());
  grads.dv = dv.to(v.scalar_type());
  if (need_type_grad) {
    at::Tensor dtypes =
        at::zeros({dims.b, dims.h_kv, dims.t, kNumTokenTypes}, at::TensorOptions().dtype(at::kDouble));
    double* out = dtypes.data_ptr<double>();
    // docs/method.md 5.4 regulariser: lambda * n_rep * (T - j) / T for global j, lambda * n_rep * (e_j - j) /
    // T for local j.
    const double reg = options.lambda * static_cast<double>(dims.n_rep) / static_cast<double>(dims.t);
    for (int64_t hh = 0; hh < dims.b * dims.h_kv; ++hh) {
      const HeadMeta& meta = metas[hh];
      for (int64_t j = 0; j < dims.t; ++j) {
        const int64_t x = hh * dims.t + j;
        double all = 0, sliding = 0, local = 0, collected = 0;
        for (const auto& sl : slots) {
          all += sl.all[x];
          sliding += sl.sliding[x];
          local += sl.local[x];
          collected += sl.collected[x];
        }
        double* o = out + x * kNumTokenTypes;
        o[static_cast<int>(TokenType::kGlobal)] = all - collected;
        o[static_cast<int>(TokenType::kLocal)] = local;
        o[static_cast<int>(TokenType::kSliding)] = sliding;
        if (reg != 0.0 && meta.type[j] == kGlobalType) {
          o[static_cast<int>(TokenType::kGlobal)] += reg * static_cast<double>(dims.t - j);
        }
        if (reg != 0.0 && meta.type[j] == kLocalType) {
          o[static_cast<int>(TokenType::kLocal)] += reg * static_cast<double>(meta.last[j] - j);  // L_j = e_j
        }
      }
    }
    grads.dtypes = dtypes.to(st);
  }
  return grads;
}

}  // namespace

FusedForwardResult FusedNatsForward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                    const at::Tensor& types, int64_t window, bool keep_lse,
                                    bool keep_full_lse, int64_t query_begin) {
  TORCH_CHECK(window >= 0, "NAtS window must be >= 0, got ", window);
  const Dims dims = CheckShapes(q, k, v, types);
  TORCH_CHECK(q.device().is_cpu(), "fused NAtS attention runs on CPU tensors; got ", q.device());
  at::NoGradGuard no_grad;
  if (ComputeType(q) == at::kDouble) {
    return ForwardTyped<double>(q, k, v, types, window, keep_lse, keep_full_lse, query_begin, dims);
  }
  return ForwardTyped<float>(q, k, v, types, window, keep_lse, keep_full_lse, query_begin, dims);
}

FusedGradients FusedNatsBackward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 const at::Tensor& types, const FusedForwardResult& forward,
                                 const at::Tensor& dout, const AttentionOptions& options,
                                 bool need_type_grad) {
  TORCH_CHECK(options.window >= 0, "NAtS window must be >= 0, got ", options.window);
  const Dims dims = CheckShapes(q, k, v, types);
  TORCH_CHECK(dout.sizes() == q.sizes(), "dout ", dout.sizes(), " must match q ", q.sizes());
  TORCH_CHECK(forward.out.defined() && forward.lse_masked.defined(),
              "backward needs the forward's out and lse");
  at::NoGradGuard no_grad;
  if (ComputeType(q) == at::kDouble) {
    return BackwardTyped<double>(q, k, v, types, forward, dout, options, need_type_grad, dims);
  }
  return BackwardTyped<float>(q, k, v, types, forward, dout, options, need_type_grad, dims);
}

at::Tensor NatsSparsePrefill(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             const at::Tensor& types, int64_t window, int64_t query_begin) {
  return FusedNatsForward(q, k, v, types, window, /*keep_lse=*/false, /*keep_full_lse=*/false, query_begin)
      .out;
}

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class FusedNatsAttentionFunction : public torch::autograd::Function<FusedNatsAttentionFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k,
                            const at::Tensor& v, const at::Tensor& onehot, int64_t window, double lambda,
                            int64_t grad_mode, int64_t query_begin) {
    const at::Tensor types = TypesFromOneHot(onehot);
    const auto mode = static_cast<MaskGradMode>(grad_mode);
    const bool full = mode == MaskGradMode::kUnmasked;  // Z^F is needed only by that mode's type gradient
    FusedForwardResult fwd = FusedNatsForward(q, k, v, types, window, /*keep_lse=*/true, full, query_begin);
    ctx->saved_data["query_begin"] = query_begin;
    ctx->save_for_backward({q, k, v, types, fwd.out, fwd.lse_masked, fwd.lse_full});
    ctx->saved_data["window"] = window;
    ctx->saved_data["lambda"] = lambda;
    ctx->saved_data["grad_mode"] = grad_mode;
    ctx->saved_data["types_dtype"] = onehot.scalar_type();
    return fwd.out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    FusedForwardResult fwd{saved[4], saved[5], saved[6]};
    AttentionOptions options;
    options.window = ctx->saved_data["window"].toInt();
    options.lambda = ctx->saved_data["lambda"].toDouble();
    options.grad_mode = static_cast<MaskGradMode>(ctx->saved_data["grad_mode"].toInt());
    options.query_begin = ctx->saved_data["query_begin"].toInt();
    at::Tensor dout = grad_outputs[0];
    if (!dout.defined()) dout = at::zeros_like(saved[0]);
    const bool need_type_grad = ctx->needs_input_grad(3);
    FusedGradients grads =
        FusedNatsBackward(saved[0], saved[1], saved[2], saved[3], fwd, dout, options, need_type_grad);
    at::Tensor dtypes;
    if (need_type_grad) dtypes = grads.dtypes.to(ctx->saved_data["types_dtype"].toScalarType());
    return {grads.dq, grads.dk, grads.dv, dtypes, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor FusedNatsAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              const at::Tensor& types, const AttentionOptions& options) {
  TORCH_CHECK(options.window >= 0, "NAtS window must be >= 0, got ", options.window);
  const bool needs_grad = at::GradMode::is_enabled() && (q.requires_grad() || k.requires_grad() ||
                                                         v.requires_grad() || types.requires_grad());
  if (!needs_grad) {
    // Inference: no lse to keep, no autograd node; only the keys each query sees are visited.
    return NatsSparsePrefill(q, k, v, TypesFromOneHot(types), options.window, options.query_begin);
  }
  return FusedNatsAttentionFunction::apply(q, k, v, types, options.window, options.lambda,
                                           static_cast<int64_t>(options.grad_mode), options.query_begin);
}

}  // namespace nats
