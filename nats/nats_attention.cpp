// Placeholder until the reference NAtS attention lands (issue 3); dense attention does not call it.
#include "nats/attention.h"

#include <torch/torch.h>

namespace nats {
at::Tensor NatsAttention(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                         const AttentionOptions&) {
  TORCH_CHECK(false, "NAtS attention is not built yet; use model.attention: DENSE");
}
}  // namespace nats
