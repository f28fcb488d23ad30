// The shape check of nats/attention_shapes.h.
#include "nats/attention_shapes.h"

#include <c10/util/Exception.h>

namespace nats {

AttentionDims CheckAttentionShapes(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   const at::Tensor& types) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "NAtS attention expects [B, H, T, D] q, k, v");
  TORCH_CHECK(k.sizes() == v.sizes(), "k and v must have the same shape, got ", k.sizes(), " and ",
              v.sizes());
  AttentionDims dims{q.size(0), q.size(1), k.size(1), 0, q.size(2), q.size(3)};
  TORCH_CHECK(k.size(0) == dims.b && k.size(2) == dims.t && k.size(3) == dims.d, "q ", q.sizes(), " and k ",
              k.sizes(), " disagree on batch, length or head size");
  TORCH_CHECK(dims.h % dims.h_kv == 0, "n_head (", dims.h, ") must be a multiple of n_kv_head (", dims.h_kv,
              ")");
  dims.n_rep = dims.h / dims.h_kv;
  TORCH_CHECK(
      types.dim() == 3 && types.size(0) == dims.b && types.size(1) == dims.h_kv && types.size(2) == dims.t,
      "types must be [B, H_kv, T] = [", dims.b, ", ", dims.h_kv, ", ", dims.t, "], got ", types.sizes());
  return dims;
}

at::ScalarType AttentionComputeType(const at::Tensor& q) {
  return q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

}  // namespace nats
