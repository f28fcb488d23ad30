// The mask data of nats/fused/tile_meta.h.
#include "nats/fused/tile_meta.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <limits>

#include "nats/token_type.h"

namespace nats::fused {

namespace {

constexpr int8_t kGlobalType = static_cast<int8_t>(TokenType::kGlobal);
constexpr int8_t kLocalType = static_cast<int8_t>(TokenType::kLocal);

}  // namespace

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
  int32_t max_col = std::numeric_limits<int32_t>::min(), min_last = std::numeric_limits<int32_t>::max();
  for (int c = 0; c < n; ++c) {
    const int32_t j = cols[c];
    ck->col[c] = j;
    ck->last[c] = m.last[j];
    ck->next[c] = m.next[j];
    ck->type[c] = m.type[j];
    max_col = std::max(max_col, j);
    min_last = std::min(min_last, m.last[j]);
  }
  ck->max_col = max_col;
  ck->min_last = min_last;
}

AttentionDims CheckFusedShapes(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const at::Tensor& types) {
  const AttentionDims dims = CheckAttentionShapes(q, k, v, types);
  TORCH_CHECK(dims.t < (int64_t{1} << 30), "fused NAtS attention supports T < 2^30, got ", dims.t);
  return dims;
}

}  // namespace nats::fused
