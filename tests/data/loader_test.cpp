// Loader: determinism, dp-invariance of the global batch, window contents, epoch reshuffling, argument
// errors. The shard used here holds token i at position i (mod a 32-bit vocab), so a window's content says
// where it came from and every check is against first principles rather than against the loader itself.
#include "data/loader.h"

#include <unistd.h>

#include <algorithm>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace nats::data {
namespace {

constexpr int64_t kVocab = 1 << 20;  // uint32 storage, so position == token id for every position used here

std::shared_ptr<const TokenCorpus> IotaShard(uint64_t num_tokens, const std::string& name) {
  const std::string path =
      std::string(::testing::TempDir()) + "/loader_test_" + std::to_string(::getpid()) + "_" + name + ".tok";
  std::vector<std::vector<int32_t>> docs(3);
  for (uint64_t i = 0; i < num_tokens; ++i)
    docs[i * 3 / num_tokens].push_back(static_cast<int32_t>(i % kVocab));
  EXPECT_TRUE(WriteTokenShard(path, kVocab, docs).ok());
  absl::StatusOr<TokenCorpus> corpus = TokenCorpus::Open(path);
  EXPECT_TRUE(corpus.ok()) << corpus.status();
  return std::make_shared<const TokenCorpus>(*std::move(corpus));
}

Loader MakeLoader(std::shared_ptr<const TokenCorpus> shard, int64_t seq_len, int64_t batch, int rank, int dp,
                  uint64_t seed) {
  LoaderOptions o;
  o.seq_len = seq_len;
  o.global_batch = batch;
  o.dp_rank = rank;
  o.dp_size = dp;
  o.seed = seed;
  absl::StatusOr<Loader> loader = Loader::Create(std::move(shard), o);
  EXPECT_TRUE(loader.ok()) << loader.status();
  return *std::move(loader);
}

TEST(WindowPermutation, IsABijectionForManySizes) {
  for (uint64_t n : {1u, 2u, 3u, 5u, 16u, 17u, 1000u, 4097u, 65535u}) {
    for (uint64_t key : {0ull, 1ull, 0xDEADBEEFull}) {
      WindowPermutation perm(n, key);
      std::vector<bool> seen(n, false);
      for (uint64_t i = 0; i < n; ++i) {
        uint64_t p = perm(i);
        ASSERT_LT(p, n) << "n=" << n;
        ASSERT_FALSE(seen[p]) << "n=" << n << " hit " << p << " twice";
        seen[p] = true;
      }
    }
  }
}

TEST(WindowPermutation, ActuallyShuffles) {
  WindowPermutation perm(1000, 42);
  int fixed_points = 0, ascending_pairs = 0;
  for (uint64_t i = 0; i < 1000; ++i) {
    fixed_points += perm(i) == i;
    if (i > 0) ascending_pairs += perm(i) > perm(i - 1);
  }
  EXPECT_LT(fixed_points, 10);             // ~1 expected for a random permutation
  EXPECT_NEAR(ascending_pairs, 500, 100);  // ~499.5 expected; identity would give 999
}

TEST(Loader, WindowCountAndContents) {
  const int64_t T = 16;
  auto shard = IotaShard(1000, "contents");
  Loader loader = MakeLoader(shard, T, 8, 0, 1, 7);
  EXPECT_EQ(loader.windows_per_epoch(), (1000u - 1) / T);  // 62 windows of 17 tokens at stride 16
  EXPECT_EQ(loader.local_batch(), 8);
  for (uint64_t step = 0; step < 20; ++step) {
    std::vector<int32_t> batch = loader.Batch(step * 8);
    ASSERT_EQ(batch.size(), 8u * (T + 1));
    for (int64_t j = 0; j < 8; ++j) {
      uint64_t window = loader.WindowOfSample(step * 8 + j);
      ASSERT_LT(window, loader.windows_per_epoch());
      for (int64_t t = 0; t <= T; ++t) {
        // Position of this token in the shard = its value (iota shard).
        ASSERT_EQ(batch[j * (T + 1) + t], static_cast<int32_t>(window * T + t))
            << "step " << step << " row " << j;
      }
    }
  }
}

TEST(Loader, EveryWindowOncePerEpoch) {
  auto shard = IotaShard(5000, "epoch_cover");
  Loader loader = MakeLoader(shard, 32, 4, 0, 1, 3);
  const uint64_t W = loader.windows_per_epoch();
  for (uint64_t epoch = 0; epoch < 3; ++epoch) {
    std::set<uint64_t> seen;
    for (uint64_t i = 0; i < W; ++i) seen.insert(loader.WindowOfSample(epoch * W + i));
    EXPECT_EQ(seen.size(), W) << "epoch " << epoch;
  }
}

TEST(Loader, SameInputsSameWindows) {
  auto shard = IotaShard(5000, "determinism");
  Loader a = MakeLoader(shard, 32, 6, 1, 3, 1337);
  Loader b = MakeLoader(shard, 32, 6, 1, 3, 1337);
  for (uint64_t consumed : {0ull, 6ull, 150ull, 1000003ull}) EXPECT_EQ(a.Batch(consumed), b.Batch(consumed));
  // And the seed matters.
  Loader c = MakeLoader(shard, 32, 6, 1, 3, 1338);
  EXPECT_NE(a.Batch(0), c.Batch(0));
}

TEST(Loader, RanksAreDisjointAndTheirUnionIsTheSingleRankBatch) {
  const int64_t T = 8, B = 12;
  auto shard = IotaShard(3000, "dp");
  Loader single = MakeLoader(shard, T, B, 0, 1, 99);
  for (int dp : {2, 3, 4, 6, 12}) {
    for (uint64_t consumed : {0ull, 12ull, 360ull, 5000ull}) {
      std::vector<int32_t> concat;
      std::set<uint64_t> windows;
      for (int r = 0; r < dp; ++r) {
        Loader rank = MakeLoader(shard, T, B, r, dp, 99);
        ASSERT_EQ(rank.local_batch(), B / dp);
        std::vector<int32_t> part = rank.Batch(consumed);
        concat.insert(concat.end(), part.begin(), part.end());
        for (int64_t j = 0; j < B / dp; ++j)
          windows.insert(part[j * (T + 1)] / T);  // first token = window * T
      }
      // Rank r holds rows [r*B/dp, (r+1)*B/dp) in order, so concatenation in rank order is the dp=1 batch.
      EXPECT_EQ(concat, single.Batch(consumed)) << "dp=" << dp << " consumed=" << consumed;
      // Within one epoch (B < W here, and these batches do not straddle an epoch) samples are distinct
      // windows.
      EXPECT_EQ(windows.size(), static_cast<size_t>(B)) << "dp=" << dp << " consumed=" << consumed;
    }
  }
}

TEST(Loader, ResumeNeedsOnlyConsumedSamples) {
  // Changing dp mid-run: steps 0-9 at dp=2 then 10-19 at dp=4 see the same global batches as dp=1 throughout.
  const int64_t T = 8, B = 8;
  auto shard = IotaShard(4000, "resume");
  Loader single = MakeLoader(shard, T, B, 0, 1, 5);
  for (uint64_t step = 0; step < 20; ++step) {
    int dp = step < 10 ? 2 : 4;
    std::vector<int32_t> concat;
    for (int r = 0; r < dp; ++r) {
      std::vector<int32_t> part = MakeLoader(shard, T, B, r, dp, 5).Batch(step * B);
      concat.insert(concat.end(), part.begin(), part.end());
    }
    EXPECT_EQ(concat, single.Batch(step * B)) << "step " << step;
  }
}

TEST(Loader, DifferentEpochsGiveDifferentOrders) {
  auto shard = IotaShard(20000, "epochs");
  Loader loader = MakeLoader(shard, 16, 4, 0, 1, 11);
  const uint64_t W = loader.windows_per_epoch();
  std::vector<uint64_t> e0, e1, e2;
  for (uint64_t i = 0; i < W; ++i) {
    e0.push_back(loader.WindowOfSample(i));
    e1.push_back(loader.WindowOfSample(W + i));
    e2.push_back(loader.WindowOfSample(2 * W + i));
  }
  EXPECT_NE(e0, e1);
  EXPECT_NE(e1, e2);
  EXPECT_NE(e0, e2);
  int same_position = 0;
  for (uint64_t i = 0; i < W; ++i) same_position += e0[i] == e1[i];
  EXPECT_LT(same_position, 10) << "epochs 0 and 1 agree on " << same_position << " of " << W << " positions";
}

TEST(Loader, EvalWindowsAreSequential) {
  const int64_t T = 10;
  auto shard = IotaShard(105, "eval");
  EXPECT_EQ(NumWindows(105, T), 10u);
  absl::StatusOr<std::vector<int32_t>> all = EvalWindows(*shard, T, 0, 10);
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 10u * (T + 1));
  for (int64_t k = 0; k < 10; ++k) {
    for (int64_t t = 0; t <= T; ++t) ASSERT_EQ((*all)[k * (T + 1) + t], k * T + t);
  }
  absl::StatusOr<std::vector<int32_t>> tail = EvalWindows(*shard, T, 7, 3);
  ASSERT_TRUE(tail.ok());
  EXPECT_EQ(*tail, std::vector<int32_t>(all->begin() + 7 * (T + 1), all->end()));

  absl::StatusOr<std::vector<int32_t>> past = EvalWindows(*shard, T, 8, 3);
  ASSERT_FALSE(past.ok());
  EXPECT_EQ(past.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_NE(past.status().message().find(shard->path()), std::string::npos) << past.status();
}

TEST(Loader, ErrorsNameTheConfigField) {
  auto tiny = IotaShard(16, "tiny");
  LoaderOptions o;
  o.seq_len = 16;  // needs 17 tokens
  o.global_batch = 4;
  o.dp_size = 1;
  absl::StatusOr<Loader> too_short = Loader::Create(tiny, o);
  ASSERT_FALSE(too_short.ok());
  EXPECT_NE(too_short.status().message().find("model.context_length"), std::string::npos)
      << too_short.status();
  EXPECT_NE(too_short.status().message().find(tiny->path()), std::string::npos) << too_short.status();
  EXPECT_FALSE(EvalWindows(*tiny, 16, 0, 1).ok());

  o.seq_len = 15;  // exactly T+1 tokens: one window
  absl::StatusOr<Loader> one = Loader::Create(tiny, o);
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(one->windows_per_epoch(), 1u);

  o.global_batch = 6;
  o.dp_size = 4;
  absl::StatusOr<Loader> indivisible = Loader::Create(tiny, o);
  ASSERT_FALSE(indivisible.ok());
  EXPECT_NE(indivisible.status().message().find("train.batch_size"), std::string::npos)
      << indivisible.status();
  EXPECT_NE(indivisible.status().message().find("parallel.dp"), std::string::npos) << indivisible.status();

  o.global_batch = 8;
  o.dp_rank = 4;
  EXPECT_FALSE(Loader::Create(tiny, o).ok());
}

}  // namespace
}  // namespace nats::data
