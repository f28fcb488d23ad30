// Backward of the fused NAtS attention (docs/method.md 5); contract in nats/fused_attention.h. The work is
// laid out as in forward.cpp (tasks = query blocks, visible key columns in chunks of kBlock).
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
#include <ATen/ATen.h>
#include <ATen/record_function.h>

#include <algorithm>
#include <cmath>
#include <vector>

// The hot loops below must vectorise; the project builds with -O2, where GCC does not vectorise them. After
// the library headers (their code keeps the build's flags) and before ours (the kernel's inline helpers).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O3")
#endif

#include "nats/cuda/device_attention.h"
#include "nats/fused/row_kernels.h"
#include "nats/fused/task_schedule.h"
#include "nats/fused/tile_blas.h"
#include "nats/fused/tile_meta.h"
#include "nats/fused_attention.h"
#include "nats/token_type.h"

namespace nats {
namespace {

using namespace fused;  // NOLINT: the kernel's own internals, nats/fused/

constexpr int8_t kGlobalType = static_cast<int8_t>(TokenType::kGlobal);
constexpr int8_t kLocalType = static_cast<int8_t>(TokenType::kLocal);

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
                    const std::vector<HeadMeta>& metas, const AttentionDims& dims,
                    const AttentionOptions& options, bool need_type_grad, at::Tensor& dq,
                    std::vector<SlotBuffers<T>>& slots) {
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
                             const AttentionDims& dims) {
  const at::ScalarType st = AttentionComputeType(q);
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

FusedGradients FusedNatsBackward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 const at::Tensor& types, const FusedForwardResult& forward,
                                 const at::Tensor& dout, const AttentionOptions& options,
                                 bool need_type_grad) {
  if (q.is_cuda()) return RowwiseNatsBackward(q, k, v, types, forward, dout, options, need_type_grad);
  RECORD_FUNCTION("nats::fused_attention_backward", std::vector<c10::IValue>());  // runtime/op_profiler.h
  TORCH_CHECK(options.window >= 0, "NAtS window must be >= 0, got ", options.window);
  const AttentionDims dims = CheckFusedShapes(q, k, v, types);
  TORCH_CHECK(dout.sizes() == q.sizes(), "dout ", dout.sizes(), " must match q ", q.sizes());
  TORCH_CHECK(forward.out.defined() && forward.lse_masked.defined(),
              "backward needs the forward's out and lse");
  at::NoGradGuard no_grad;
  if (AttentionComputeType(q) == at::kDouble) {
    return BackwardTyped<double>(q, k, v, types, forward, dout, options, need_type_grad, dims);
  }
  return BackwardTyped<float>(q, k, v, types, forward, dout, options, need_type_grad, dims);
}

}  // namespace nats
