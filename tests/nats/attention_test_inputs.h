// tests/nats/attention_test_inputs.h
//
// Shared by the attention kernel tests (fused_attention_test.cpp, rowwise_attention_test.cpp): random
// q/k/v/dout and int types for a shape and a type mix, the edge-case shapes every kernel must pass, and a
// tolerance check that names the worst entry.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "nats/token_type.h"

namespace nats::attention_test {

inline constexpr int64_t kG = static_cast<int64_t>(TokenType::kGlobal);
inline constexpr int64_t kL = static_cast<int64_t>(TokenType::kLocal);
inline constexpr int64_t kS = static_cast<int64_t>(TokenType::kSliding);

enum class Mix { kUniform, kLearned, kAllGlobal, kAllSliding, kLongLocal, kAllLocal };

struct Case {
  int64_t b = 1, h = 2, h_kv = 1, t = 100, d = 16, window = 4;
  Mix mix = Mix::kUniform;
  bool force_ends = true;
};

inline std::string Describe(const Case& c, int seed) {
  return "seed " + std::to_string(seed) + " B" + std::to_string(c.b) + " H" + std::to_string(c.h) + " Hkv" +
         std::to_string(c.h_kv) + " T" + std::to_string(c.t) + " D" + std::to_string(c.d) + " W" +
         std::to_string(c.window) + " mix" + std::to_string(static_cast<int>(c.mix));
}

struct Inputs {
  at::Tensor q, k, v, dout;
  at::Tensor types;  // int8 [B, H_kv, T]
};

inline at::Tensor RandomTypes(const Case& c) {
  const std::vector<int64_t> shape{c.b, c.h_kv, c.t};
  at::Tensor u = torch::rand(shape, torch::kDouble);
  auto pick = [&](double p_global, double p_local) {
    return torch::where(u < p_global, torch::full({}, kG, torch::kLong),
                        torch::where(u < p_global + p_local, torch::full({}, kL, torch::kLong),
                                     torch::full({}, kS, torch::kLong)));
  };
  at::Tensor types;
  switch (c.mix) {
    case Mix::kUniform:
      types = torch::randint(0, 3, shape, torch::kLong);
      break;
    case Mix::kLearned:
      types = pick(0.03, 0.12);
      break;
    case Mix::kAllGlobal:
      types = torch::full(shape, kG, torch::kLong);
      break;
    case Mix::kAllSliding:
      types = torch::full(shape, kS, torch::kLong);
      break;
    case Mix::kLongLocal:
      types = pick(0.05, 0.95);
      break;
    case Mix::kAllLocal:
      types = torch::full(shape, kL, torch::kLong);
      break;
  }
  if (c.force_ends && c.mix != Mix::kAllSliding && c.mix != Mix::kAllLocal) {
    types.select(-1, 0).fill_(kG);
    types.select(-1, c.t - 1).fill_(kG);
  }
  return types.to(torch::kChar);
}

inline Inputs RandomInputs(const Case& c, int seed, torch::Dtype dtype) {
  torch::manual_seed(seed);
  Inputs in;
  const auto opts = torch::TensorOptions().dtype(dtype);
  // A larger logit scale than randn alone makes masked exp(a)/Z^M exceed 1, so clipped != exact.
  in.q = torch::randn({c.b, c.h, c.t, c.d}, opts) * 1.5;
  in.k = torch::randn({c.b, c.h_kv, c.t, c.d}, opts);
  in.v = torch::randn({c.b, c.h_kv, c.t, c.d}, opts);
  in.dout = torch::randn({c.b, c.h, c.t, c.d}, opts);
  in.types = RandomTypes(c);
  return in;
}

// max |got - want| <= atol + rtol * max |want|, with the location of the worst entry in the message.
inline void ExpectClose(const at::Tensor& got, const at::Tensor& want, double rtol, double atol,
                        const std::string& what) {
  ASSERT_TRUE(got.defined()) << what << ": undefined";
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  at::Tensor g = got.to(torch::kDouble), w = want.to(torch::kDouble);
  ASSERT_TRUE(torch::isfinite(g).all().item<bool>() == torch::isfinite(w).all().item<bool>())
      << what << ": non-finite";
  const double scale = w.abs().max().item<double>();
  const at::Tensor diff = (g - w).abs();
  const double err = diff.max().item<double>();
  EXPECT_LE(err, atol + rtol * scale) << what << ": max abs error " << err << " (max |ref| " << scale
                                      << ") at flat index " << diff.argmax().item<int64_t>();
}

struct Tolerance {
  double rtol, atol;
};

// Random shapes and types every kernel must pass (tight tolerances in double): GQA, T not a multiple of the
// 64-row block, W >= T, no forced ends, all-global (= dense causal), all-sliding, long local segments, all
// local, T = 1.
inline const std::vector<Case>& DoubleCases() {
  static const std::vector<Case> cases = [] {
    std::vector<Case> v;
    v.push_back({1, 2, 1, 9, 8, 2, Mix::kUniform, true});      // tiny, single partial block, GQA
    v.push_back({2, 4, 2, 150, 16, 5, Mix::kUniform, true});   // GQA, T not a multiple of 64
    v.push_back({1, 3, 3, 200, 8, 300, Mix::kUniform, true});  // W >= T
    v.push_back({1, 2, 1, 64, 32, 3, Mix::kLearned, false});   // exactly one block, no forced ends
    v.push_back({1, 4, 2, 257, 16, 16, Mix::kLearned, true});  // realistic mix, 5 blocks
    v.push_back({1, 2, 2, 190, 8, 7, Mix::kAllGlobal, true});  // = dense causal
    v.push_back({1, 2, 1, 190, 8, 7, Mix::kAllSliding, true});
    v.push_back({2, 2, 1, 230, 8, 3, Mix::kLongLocal, true});  // long local segments across blocks
    v.push_back({1, 2, 2, 140, 8, 2, Mix::kAllLocal, false});  // one segment, no global at all
    v.push_back({1, 1, 1, 1, 4, 0, Mix::kUniform, true});      // T = 1, W = 0
    return v;
  }();
  return cases;
}

}  // namespace nats::attention_test
