// The one-pass Q/K/V split + RoPE (nats/qkv_heads.h) against the narrow / view / transpose / ApplyRope
// composition it replaces: outputs and the qkv gradient through autograd, with and without RoPE, at an
// offset, with GQA, in double (tight) and float, and when only some of q, k, v reach the loss (undefined
// gradients).
#include "nats/qkv_heads.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <vector>

namespace nats {
namespace {

struct Case {
  int64_t b, t, h, h_kv, d, offset;
  bool rope;
};

void Compare(const Case& c, torch::Dtype dtype, std::vector<bool> used) {
  torch::manual_seed(c.b * 1000 + c.t + c.h);
  const auto opts = torch::TensorOptions().dtype(dtype);
  const at::Tensor qkv0 = torch::randn({c.b, c.t, (c.h + 2 * c.h_kv) * c.d}, opts);
  // Tables as the model keeps them: double, longer than the sequence, read from `offset`.
  const at::Tensor angles =
      torch::arange(c.offset + c.t + 5, torch::kDouble).unsqueeze(1) * torch::rand({c.d / 2}, torch::kDouble);
  const at::Tensor cos = c.rope ? angles.cos() : at::Tensor(), sin = c.rope ? angles.sin() : at::Tensor();
  std::vector<at::Tensor> upstream;
  for (int64_t heads : {c.h, c.h_kv, c.h_kv}) upstream.push_back(torch::randn({c.b, heads, c.t, c.d}, opts));
  std::vector<std::vector<at::Tensor>> results;
  for (bool fast : {false, true}) {
    at::Tensor qkv = qkv0.clone().requires_grad_(true);
    const QkvHeads out = fast ? SplitQkvHeads(qkv, c.h, c.h_kv, c.d, cos, sin, c.offset)
                              : SplitQkvHeadsReference(qkv, c.h, c.h_kv, c.d, cos, sin, c.offset);
    const at::Tensor parts[] = {out.q, out.k, out.v};
    at::Tensor loss = torch::zeros({}, opts);
    for (int x = 0; x < 3; ++x) {
      if (used[x]) loss = loss + (parts[x] * upstream[x]).sum();
    }
    loss.backward();
    results.push_back({out.q.detach(), out.k.detach(), out.v.detach(), qkv.grad()});
    if (fast) {
      EXPECT_TRUE(out.q.is_contiguous() && out.k.is_contiguous() && out.v.is_contiguous());
    }
  }
  const double tol = dtype == torch::kDouble ? 1e-12 : 2e-6;
  const char* names[] = {"q", "k", "v", "dqkv"};
  for (int x = 0; x < 4; ++x) {
    const double err = (results[1][x] - results[0][x]).abs().max().item<double>();
    EXPECT_LE(err, tol) << names[x] << " b" << c.b << " t" << c.t << " h" << c.h << "/" << c.h_kv << " d"
                        << c.d << " offset " << c.offset << (c.rope ? " rope" : " no rope");
  }
  // The gradient is not trivially zero: the comparison would pass for two no-ops.
  EXPECT_GT(results[1][3].abs().max().item<double>(), 0.1);
}

TEST(QkvHeads, MatchesTheComposition) {
  for (const Case& c : {Case{2, 7, 4, 2, 8, 0, true}, Case{1, 33, 6, 6, 16, 5, true},
                        Case{3, 5, 2, 1, 4, 0, false}, Case{1, 64, 8, 2, 32, 100, true}}) {
    for (torch::Dtype dtype : {torch::kDouble, torch::kFloat}) Compare(c, dtype, {true, true, true});
  }
}

TEST(QkvHeads, OnlySomeOutputsUsed) {
  const Case c{2, 9, 4, 2, 8, 3, true};
  Compare(c, torch::kDouble, {true, false, true});
  Compare(c, torch::kDouble, {false, true, false});
}

TEST(QkvHeads, RejectsAWrongWidth) {
  const at::Tensor qkv = torch::zeros({1, 4, 30});
  EXPECT_THROW(SplitQkvHeads(qkv, 2, 1, 8, at::Tensor(), at::Tensor(), 0), c10::Error);
}

}  // namespace
}  // namespace nats
