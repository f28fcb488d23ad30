// Tests of the NAtS mask rule (docs/method.md section 3) and the mask statistics (sections 3, 6), against the
// worked example of the spec and against scalar loops written straight from the rule.
#include "nats/masks.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "nats/token_type.h"

namespace nats {
namespace {

constexpr int64_t kG = static_cast<int64_t>(TokenType::kGlobal);
constexpr int64_t kL = static_cast<int64_t>(TokenType::kLocal);
constexpr int64_t kS = static_cast<int64_t>(TokenType::kSliding);

at::Tensor TypesFromString(const std::string& letters) {
  std::vector<int64_t> values;
  for (char c : letters) values.push_back(c == 'G' ? kG : c == 'L' ? kL : kS);
  return torch::tensor(values, torch::kLong).view({1, 1, -1}).to(torch::kChar);
}

// Random types [B, H_kv, T]: a mix picked per seed (including all-global / all-sliding / all-local ones).
at::Tensor RandomTypes(int64_t b, int64_t h, int64_t t, int seed, bool force_ends) {
  torch::manual_seed(seed);
  at::Tensor types;
  switch (seed % 7) {
    case 0:
      types = torch::full({b, h, t}, kG, torch::kLong);
      break;
    case 1:
      types = torch::full({b, h, t}, kS, torch::kLong);
      break;
    case 2:
      types = torch::full({b, h, t}, kL, torch::kLong);
      break;
    case 3: {  // globals rare: long local segments
      at::Tensor u = torch::rand({b, h, t});
      types = torch::where(
          u < 0.05, torch::full({}, kG, torch::kLong),
          torch::where(u < 0.7, torch::full({}, kL, torch::kLong), torch::full({}, kS, torch::kLong)));
      break;
    }
    default:
      types = torch::randint(0, 3, {b, h, t}, torch::kLong);
  }
  if (force_ends) {
    types.select(-1, 0).fill_(kG);
    types.select(-1, t - 1).fill_(kG);
  }
  return types.to(torch::kChar);
}

// e_j computed by a forward search per position; T-1 when none (the documented convention).
int64_t ScalarNextGlobal(const std::vector<int64_t>& ty, int64_t j) {
  for (int64_t k = j; k < static_cast<int64_t>(ty.size()); ++k)
    if (ty[k] == kG) return k;
  return static_cast<int64_t>(ty.size()) - 1;
}

std::vector<int64_t> Row(const at::Tensor& types, int64_t b, int64_t h) {
  at::Tensor r = types[b][h].to(torch::kLong).contiguous();
  return std::vector<int64_t>(r.data_ptr<int64_t>(), r.data_ptr<int64_t>() + r.numel());
}

// The mask of docs/method.md 3 as a scalar loop, twice: the case rule and the product form; they must agree.
at::Tensor BruteForceMask(const at::Tensor& types, int64_t window) {
  const int64_t b = types.size(0), h = types.size(1), t = types.size(2);
  at::Tensor mask = torch::zeros({b, h, t, t}, torch::kBool);
  auto acc = mask.accessor<bool, 4>();
  for (int64_t bi = 0; bi < b; ++bi) {
    for (int64_t hi = 0; hi < h; ++hi) {
      const std::vector<int64_t> ty = Row(types, bi, hi);
      for (int64_t i = 0; i < t; ++i) {
        for (int64_t j = 0; j <= i; ++j) {
          bool rule = false;
          if (ty[j] == kG) rule = true;
          if (ty[j] == kL) rule = i <= ScalarNextGlobal(ty, j);
          if (ty[j] == kS) rule = i - j <= window;
          double prod = 1.0;
          for (int64_t k = j + 1; k <= i - 1; ++k) prod *= (ty[k] == kG ? 0.0 : 1.0);
          const double product_form = (ty[j] == kG ? 1.0 : 0.0) + (ty[j] == kL ? prod : 0.0) +
                                      (ty[j] == kS && i - j <= window ? 1.0 : 0.0);
          EXPECT_EQ(rule, product_form == 1.0) << "rule and product form disagree at i=" << i << " j=" << j;
          acc[bi][hi][i][j] = rule;
        }
      }
    }
  }
  return mask;
}

TEST(Masks, WorkedExampleOfSpecSection3) {
  const at::Tensor types = TypesFromString("GLSLLGSLG");
  const std::vector<std::string> expected = {
      "1........", "11.......", "111......", "1111.....", "11111....",
      "11.111...", "1....11..", "1....111.", "1....1111",
  };
  at::Tensor mask = DenseMask(types, /*window=*/2)[0][0];
  for (int64_t i = 0; i < 9; ++i) {
    std::string row;
    for (int64_t j = 0; j < 9; ++j) row += mask[i][j].item<bool>() ? '1' : '.';
    EXPECT_EQ(row, expected[i]) << "row " << i;
  }
  EXPECT_TRUE(
      torch::equal(NextGlobalIndex(types)[0][0], torch::tensor({0, 5, 5, 5, 5, 5, 8, 8, 8}, torch::kLong)));
  EXPECT_TRUE(
      torch::equal(FirstGlobalAfter(types)[0][0], torch::tensor({5, 5, 5, 5, 5, 8, 8, 8, 8}, torch::kLong)));
  EXPECT_TRUE(
      torch::equal(PrevGlobalIndex(types)[0][0], torch::tensor({-1, 0, 0, 0, 0, 0, 5, 5, 5}, torch::kLong)));
}

TEST(Masks, WorkedExampleStatistics) {
  const at::Tensor types = TypesFromString("GLSLLGSLG");
  // Visible rows per key: 9,5,3,3,2,4,3,2,1 = 32 of the 45 causal entries.
  EXPECT_TRUE(torch::equal(VisibleRowCount(types, 2)[0][0],
                           torch::tensor({9, 5, 3, 3, 2, 4, 3, 2, 1}, torch::kLong)));
  EXPECT_DOUBLE_EQ(MaskDensity(types, 2).item<double>(), 32.0 / 45.0);
  at::Tensor fractions = TypeFractions(types)[0][0];
  EXPECT_DOUBLE_EQ(fractions[0].item<double>(), 3.0 / 9.0);
  EXPECT_DOUBLE_EQ(fractions[1].item<double>(), 4.0 / 9.0);
  EXPECT_DOUBLE_EQ(fractions[2].item<double>(), 2.0 / 9.0);
  // A query at 9 sees globals 0, 5, 8; no local after the last global; no sliding j >= 7.
  EXPECT_EQ(KvRetained(types, 2).item<int64_t>(), 3);
  EXPECT_EQ(KvRetainedReferenceCount(types, 2).item<int64_t>(), 3 + 0 + 2);
  // Without the final global, locals after global 5 (7) stay cached and sliding 6 expires only at 9 > 6+2.
  const at::Tensor open_end = TypesFromString("GLSLLGSLL");
  EXPECT_EQ(KvRetained(open_end, 2).item<int64_t>(), 2 + 2 + 0);
  EXPECT_EQ(KvRetained(open_end, 3).item<int64_t>(), 2 + 2 + 1);
  MaskStats stats = ComputeMaskStats(types, 2);
  EXPECT_DOUBLE_EQ(stats.density.item<double>(), 32.0 / 45.0);
  EXPECT_DOUBLE_EQ(stats.kv_fraction.item<double>(), 3.0 / 9.0);
  EXPECT_DOUBLE_EQ(stats.kv_fraction_reference.item<double>(), 5.0 / 9.0);
  EXPECT_EQ(stats.type_fraction.sizes(), (at::IntArrayRef{1, 3}));
}

TEST(Masks, DenseMaskMatchesBruteForceOnRandomTypes) {
  for (int seed = 0; seed < 28; ++seed) {
    const int64_t t = 1 + (seed * 7) % 37;
    const bool force_ends = seed % 2 == 0;
    const at::Tensor types = RandomTypes(2, 3, t, seed, force_ends);
    for (int64_t window : {int64_t{0}, int64_t{1}, int64_t{3}, int64_t{16}, t, t + 5}) {
      SCOPED_TRACE("seed " + std::to_string(seed) + " T " + std::to_string(t) + " W " +
                   std::to_string(window));
      const at::Tensor mask = DenseMask(types, window);
      EXPECT_TRUE(torch::equal(mask, BruteForceMask(types, window)));
      EXPECT_TRUE(torch::equal(mask, DenseMask(types.to(torch::kLong), window)));  // int64 types too
      EXPECT_TRUE(torch::equal(VisibleRowCount(types, window), mask.sum(-2)));
      EXPECT_TRUE(torch::allclose(MaskDensity(types, window),
                                  mask.sum({-2, -1}).to(torch::kDouble) / (0.5 * t * (t + 1))));
      EXPECT_TRUE(mask.diagonal(0, -2, -1).all().item<bool>());
    }
  }
}

TEST(Masks, GlobalIndicesMatchScalarSearch) {
  for (int seed = 0; seed < 14; ++seed) {
    const int64_t t = 1 + (seed * 5) % 23;
    const at::Tensor types = RandomTypes(2, 2, t, seed, seed % 2 == 0);
    const at::Tensor e = NextGlobalIndex(types), f = FirstGlobalAfter(types), p = PrevGlobalIndex(types);
    for (int64_t b = 0; b < 2; ++b) {
      for (int64_t h = 0; h < 2; ++h) {
        const std::vector<int64_t> ty = Row(types, b, h);
        for (int64_t j = 0; j < t; ++j) {
          int64_t first_after = t - 1, last_before = -1;
          for (int64_t k = j + 1; k < t; ++k)
            if (ty[k] == kG) {
              first_after = k;
              break;
            }
          for (int64_t k = j - 1; k >= 0; --k)
            if (ty[k] == kG) {
              last_before = k;
              break;
            }
          EXPECT_EQ(e[b][h][j].item<int64_t>(), ScalarNextGlobal(ty, j));
          EXPECT_EQ(f[b][h][j].item<int64_t>(), first_after);
          EXPECT_EQ(p[b][h][j].item<int64_t>(), last_before);
        }
      }
    }
  }
}

// kv_retained (docs/method.md 6) is the number of keys a query at position T would see: extend the sequence
// by one position and read that row of the brute-force mask (the new token's own diagonal entry excluded).
TEST(Masks, KvRetainedIsTheNextQueryRow) {
  for (int seed = 0; seed < 21; ++seed) {
    const int64_t t = 1 + (seed * 3) % 19;
    const at::Tensor types = RandomTypes(2, 2, t, seed, /*force_ends=*/seed % 3 == 0);
    for (int64_t window : {int64_t{0}, int64_t{1}, int64_t{4}, t + 2}) {
      // The appended token is sliding so it cannot cut off any local before it.
      at::Tensor extended = torch::cat({types, torch::full({2, 2, 1}, kS, torch::kChar)}, -1);
      at::Tensor next_row = BruteForceMask(extended, window).select(-2, t).narrow(-1, 0, t);
      EXPECT_TRUE(torch::equal(KvRetained(types, window), next_row.sum(-1)))
          << "seed " << seed << " W " << window;
    }
  }
}

TEST(Masks, RejectsBadInput) {
  EXPECT_THROW(DenseMask(torch::zeros({2, 3}, torch::kLong), 1), c10::Error);
  EXPECT_THROW(DenseMask(torch::zeros({1, 1, 4}, torch::kFloat), 1), c10::Error);
  EXPECT_THROW(DenseMask(torch::zeros({1, 1, 4}, torch::kChar), -1), c10::Error);
}

}  // namespace
}  // namespace nats
