// Forward of the fused NAtS attention (docs/method.md 4); contract in nats/fused_attention.h.
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

template <typename T>
void ForwardKernel(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                   const std::vector<HeadMeta>& metas, const AttentionDims& dims, int64_t window,
                   bool all_causal, int64_t query_begin, at::Tensor& out, T* lse, T* lse_full) {
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
      const bool any =
          SoftmaxChunk(s.data(), rows, ck, i0, scale, m.data(), l.data(), all_causal ? mf.data() : nullptr,
                       all_causal ? lf.data() : nullptr, acc.data(), d);
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
                                int64_t query_begin, const AttentionDims& dims) {
  const at::ScalarType st = AttentionComputeType(q);
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

}  // namespace

FusedForwardResult FusedNatsForward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                    const at::Tensor& types, int64_t window, bool keep_lse,
                                    bool keep_full_lse, int64_t query_begin) {
  // CUDA tensors: the row-wise kernels of nats/cuda/ (same contract).
  if (q.is_cuda()) return RowwiseNatsForward(q, k, v, types, window, keep_lse, keep_full_lse, query_begin);
  RECORD_FUNCTION("nats::fused_attention_forward", std::vector<c10::IValue>());  // runtime/op_profiler.h
  TORCH_CHECK(window >= 0, "NAtS window must be >= 0, got ", window);
  const AttentionDims dims = CheckFusedShapes(q, k, v, types);
  TORCH_CHECK(q.device().is_cpu(), "fused NAtS attention runs on CPU or CUDA tensors; got ", q.device());
  at::NoGradGuard no_grad;
  if (AttentionComputeType(q) == at::kDouble) {
    return ForwardTyped<double>(q, k, v, types, window, keep_lse, keep_full_lse, query_begin, dims);
  }
  return ForwardTyped<float>(q, k, v, types, window, keep_lse, keep_full_lse, query_begin, dims);
}

at::Tensor NatsSparsePrefill(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             const at::Tensor& types, int64_t window, int64_t query_begin) {
  return FusedNatsForward(q, k, v, types, window, /*keep_lse=*/false, /*keep_full_lse=*/false, query_begin)
      .out;
}

}  // namespace nats
