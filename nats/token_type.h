// nats/token_type.h
//
// The three token types of Neural Attention Search (docs/method.md section 1). The numeric values are the
// option indices of the scorer's one-hot output ([..., 3] in this order) and the values stored in int
// type tensors [B, H_kv, T]; every file that reads types relies on this order.
#pragma once

#include <cstdint>

namespace nats {

enum class TokenType : int8_t {
  kGlobal = 0,   // seen by every later query
  kLocal = 1,    // seen up to and including the next global token's own query
  kSliding = 2,  // seen by queries j..j+W
};

inline constexpr int64_t kNumTokenTypes = 3;

}  // namespace nats
