// Counter-based Gumbel noise: SplitMix64 mixing of the element's coordinates (see the header).
#include "nats/gumbel_noise.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <cmath>

#include "data/mix64.h"
#include "nats/token_type.h"

namespace nats {

using data::Mix64;

at::Tensor CounterGumbel(const NoiseKey& key, int64_t layer, int64_t batch, int64_t heads, int64_t begin,
                         int64_t length, at::ScalarType dtype) {
  TORCH_CHECK(batch >= 0 && heads >= 0 && begin >= 0 && length >= 0, "CounterGumbel: bad shape");
  at::Tensor out = at::empty({batch, heads, length, kNumTokenTypes}, at::kDouble);
  double* p = out.data_ptr<double>();
  const uint64_t base = Mix64(key.seed ^ Mix64(static_cast<uint64_t>(layer) + 0x51ed270b27d6a3c1ull));
  at::parallel_for(0, batch * heads, 1, [&](int64_t first, int64_t last) {
    for (int64_t bh = first; bh < last; ++bh) {
      const uint64_t sample = static_cast<uint64_t>(key.first_sample + bh / heads);
      const uint64_t row = Mix64(base ^ Mix64(sample * 0x100000001b3ull + static_cast<uint64_t>(bh % heads)));
      double* dst = p + bh * length * kNumTokenTypes;
      for (int64_t i = 0; i < length * kNumTokenTypes; ++i) {
        const uint64_t counter = static_cast<uint64_t>(begin) * kNumTokenTypes + static_cast<uint64_t>(i);
        // 53 random bits, offset by half a step: u in (0, 1), never 0 or 1, so the logs stay finite.
        const double u = (static_cast<double>(Mix64(row ^ Mix64(counter)) >> 11) + 0.5) * 0x1.0p-53;
        dst[i] = -std::log(-std::log(u));
      }
    }
  });
  return out.to(dtype);
}

}  // namespace nats
