// Mask rule of docs/method.md 3 as tensor ops, and the statistics built on it.
#include "nats/masks.h"

#include <ATen/ATen.h>

#include <tuple>

#include "nats/token_type.h"

namespace nats {
namespace {

void CheckTypes(const at::Tensor& types) {
  TORCH_CHECK(types.defined() && types.dim() == 3, "types must be an integer tensor [B, H_kv, T], got ",
              types.defined() ? types.sizes() : at::IntArrayRef{});
  TORCH_CHECK(types.size(2) >= 1, "types must hold at least one position");
  TORCH_CHECK(types.scalar_type() == at::kChar || types.scalar_type() == at::kLong ||
                  types.scalar_type() == at::kByte || types.scalar_type() == at::kInt,
              "types must be int8/uint8/int32/int64 TokenType values, got ", types.scalar_type());
}

at::Tensor IsType(const at::Tensor& types, TokenType type) { return types.eq(static_cast<int64_t>(type)); }

at::Tensor Positions(const at::Tensor& types) {
  return at::arange(types.size(2), types.options().dtype(at::kLong));
}

}  // namespace

at::Tensor NextGlobalIndex(const at::Tensor& types) {
  CheckTypes(types);
  const int64_t t = types.size(2);
  // Candidate j for globals, the "none" sentinel T-1 elsewhere; a reverse running minimum then gives the
  // first global at or after each position.
  at::Tensor cand = at::where(IsType(types, TokenType::kGlobal), Positions(types),
                              at::full({}, t - 1, types.options().dtype(at::kLong)));
  return std::get<0>(at::cummin(cand.flip({-1}), -1)).flip({-1});
}

at::Tensor FirstGlobalAfter(const at::Tensor& types) {
  at::Tensor e = NextGlobalIndex(types);
  const int64_t t = types.size(2);
  // f_j = e_{j+1}; f_{T-1} = T-1 (nothing after the window is known).
  at::Tensor tail = at::full({types.size(0), types.size(1), 1}, t - 1, e.options());
  return at::cat({e.narrow(-1, 1, t - 1), tail}, -1);
}

at::Tensor PrevGlobalIndex(const at::Tensor& types) {
  CheckTypes(types);
  const int64_t t = types.size(2);
  at::Tensor cand = at::where(IsType(types, TokenType::kGlobal), Positions(types),
                              at::full({}, -1, types.options().dtype(at::kLong)));
  at::Tensor last_at_or_before = std::get<0>(at::cummax(cand, -1));
  at::Tensor head = at::full({types.size(0), types.size(1), 1}, -1, last_at_or_before.options());
  return at::cat({head, last_at_or_before.narrow(-1, 0, t - 1)}, -1);
}

at::Tensor DenseMask(const at::Tensor& types, int64_t window) {
  CheckTypes(types);
  TORCH_CHECK(window >= 0, "window must be >= 0, got ", window);
  const int64_t t = types.size(2);
  at::Tensor pos = Positions(types);
  at::Tensor i = pos.view({t, 1});
  at::Tensor j = pos.view({1, t});
  at::Tensor causal = j.le(i);
  at::Tensor e = NextGlobalIndex(types).unsqueeze(-2);  // [B, H_kv, 1, T]: per column
  at::Tensor g = IsType(types, TokenType::kGlobal).unsqueeze(-2);
  at::Tensor l = IsType(types, TokenType::kLocal).unsqueeze(-2);
  at::Tensor s = IsType(types, TokenType::kSliding).unsqueeze(-2);
  // docs/method.md 3: local seen up to AND INCLUDING the next global's own query; sliding by queries j..j+W.
  at::Tensor visible = g.logical_or(l.logical_and(i.le(e))).logical_or(s.logical_and((i - j).le(window)));
  visible = visible.logical_or(i.eq(j));  // the diagonal always (already implied for one-hot types)
  return visible.logical_and(causal);
}

at::Tensor VisibleRowCount(const at::Tensor& types, int64_t window) {
  CheckTypes(types);
  TORCH_CHECK(window >= 0, "window must be >= 0, got ", window);
  const int64_t t = types.size(2);
  at::Tensor j = Positions(types).view({1, 1, t});
  at::Tensor e = NextGlobalIndex(types);
  at::Tensor global_rows = (t - j).expand_as(e);
  at::Tensor local_rows = e - j + 1;
  at::Tensor sliding_rows = (j + window).clamp_max(t - 1) - j + 1;
  at::Tensor rows =
      at::where(IsType(types, TokenType::kGlobal), global_rows,
                at::where(IsType(types, TokenType::kLocal), local_rows, sliding_rows.expand_as(e)));
  return rows;
}

at::Tensor MaskDensity(const at::Tensor& types, int64_t window) {
  const int64_t t = types.size(2);
  const double causal_area = 0.5 * static_cast<double>(t) * static_cast<double>(t + 1);
  return VisibleRowCount(types, window).sum(-1).to(at::kDouble) / causal_area;
}

at::Tensor TypeFractions(const at::Tensor& types) {
  CheckTypes(types);
  at::Tensor onehot = at::one_hot(types.to(at::kLong), kNumTokenTypes).to(at::kDouble);
  return onehot.mean(-2);
}

at::Tensor KvRetained(const at::Tensor& types, int64_t window) {
  CheckTypes(types);
  TORCH_CHECK(window >= 0, "window must be >= 0, got ", window);
  const int64_t t = types.size(2);
  at::Tensor g = IsType(types, TokenType::kGlobal);
  // Globals at or after j (suffix count): a local j stays cached iff there are none (docs/method.md 6: the
  // local store is cleared once a global has been processed).
  at::Tensor globals_from_j = g.to(at::kLong).flip({-1}).cumsum(-1).flip({-1});
  at::Tensor live_local = IsType(types, TokenType::kLocal).logical_and(globals_from_j.eq(0));
  // The ring: sliding j serves queries up to j + W, so query T sees j >= T - W.
  at::Tensor in_ring = Positions(types).ge(t - window).view({1, 1, t});
  at::Tensor live_sliding = IsType(types, TokenType::kSliding).logical_and(in_ring);
  return g.sum(-1) + live_local.sum(-1) + live_sliding.sum(-1);
}

at::Tensor KvRetainedReferenceCount(const at::Tensor& types, int64_t window) {
  CheckTypes(types);
  at::Tensor g = IsType(types, TokenType::kGlobal);
  at::Tensor globals_from_j = g.to(at::kLong).flip({-1}).cumsum(-1).flip({-1});
  at::Tensor live_local = IsType(types, TokenType::kLocal).logical_and(globals_from_j.eq(0));
  return g.sum(-1) + live_local.sum(-1) + window;
}

MaskStats ComputeMaskStats(const at::Tensor& types, int64_t window) {
  const double t = static_cast<double>(types.size(2));
  MaskStats stats;
  stats.density = MaskDensity(types, window).mean(0);
  stats.type_fraction = TypeFractions(types).mean(0);
  stats.kv_fraction = KvRetained(types, window).to(at::kDouble).mean(0) / t;
  stats.kv_fraction_reference = KvRetainedReferenceCount(types, window).to(at::kDouble).mean(0) / t;
  return stats;
}

at::Tensor TypesFromOneHot(const at::Tensor& onehot) {
  TORCH_CHECK(onehot.dim() == 4 && onehot.size(-1) == kNumTokenTypes,
              "NAtS types must be a one-hot [B, H_kv, T, 3] tensor, got ", onehot.sizes());
  TORCH_CHECK(at::logical_or(onehot.eq(0), onehot.eq(1)).all().item<bool>() &&
                  onehot.sum(-1).eq(1).all().item<bool>(),
              "NAtS types must be exactly one-hot (use the scorer's straight-through output)");
  return onehot.argmax(-1).to(at::kChar);
}

}  // namespace nats
