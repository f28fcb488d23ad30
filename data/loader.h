// data/loader.h
//
// Deterministic, stateless-in-the-step training loader over a token corpus (one or more shards read as one
// stream, data/token_corpus.h).
//
// The corpus is cut into non-overlapping windows of T+1 tokens at stride T (window k = tokens [k*T, k*T + T +
// 1); consecutive windows share one token so that inputs = row[0, T) and targets = row[1, T+1) cover every
// token pair once). There are W = (num_tokens - 1) / T windows per epoch. Global sample g (counted from the
// start of training) lies in epoch e = g / W and is window P_e(g mod W), where P_e is a seeded pseudo-random
// permutation of [0, W) that depends on (seed, e) only. A step's global batch is samples [consumed, consumed
// + B); data-parallel rank r takes rows [r * B/dp, (r+1) * B/dp). So the global batch is the same for any dp
// size, and the only state needed to resume (or to resume with a different dp) is consumed_samples.
//
// The permutation is a Feistel network with cycle walking: O(1) memory and time per sample, no per-epoch
// table, and identical on every platform (no std:: distributions, whose output is implementation-defined).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "data/token_corpus.h"

namespace nats::data {

// A bijection of [0, n) chosen by `key`. Cheap to construct; evaluate with operator().
class WindowPermutation {
 public:
  WindowPermutation(uint64_t n, uint64_t key);
  uint64_t operator()(uint64_t i) const;  // i < n (checked)
  uint64_t size() const { return n_; }

 private:
  uint64_t Feistel(uint64_t x) const;

  uint64_t n_;
  int half_bits_;
  uint64_t half_mask_;
  uint64_t round_keys_[6];
};

// Windows of T+1 tokens at stride T in a shard with `num_tokens` tokens (0 if fewer than T+1 tokens).
uint64_t NumWindows(uint64_t num_tokens, int64_t seq_len);

// Sequential (unshuffled) windows first .. first+count-1 of `corpus` as [count, T+1] row-major: the
// validation reader. OutOfRange, naming the corpus, if the range passes the last window; InvalidArgument if
// the corpus has fewer than T+1 tokens.
absl::StatusOr<std::vector<int32_t>> EvalWindows(const TokenCorpus& corpus, int64_t seq_len, uint64_t first,
                                                 uint64_t count);

struct LoaderOptions {
  int64_t seq_len = 0;       // T, model.context_length
  int64_t global_batch = 0;  // B, train.batch_size: samples per optimizer step over all dp ranks
  int dp_rank = 0;
  int dp_size = 1;    // parallel.dp
  uint64_t seed = 0;  // train.seed
};

class Loader {
 public:
  // InvalidArgument naming the config field when T < 1, the corpus has fewer than T+1 tokens, B < 1,
  // B is not divisible by dp, or the rank is outside [0, dp).
  static absl::StatusOr<Loader> Create(std::shared_ptr<const TokenCorpus> corpus,
                                       const LoaderOptions& options);

  // This rank's rows of the global batch that starts at global sample `consumed_samples`:
  // [local_batch(), T+1] row-major.
  std::vector<int32_t> Batch(uint64_t consumed_samples) const;

  // The window (index into the W windows) that global sample g reads; its first token is WindowOfSample(g) *
  // T.
  uint64_t WindowOfSample(uint64_t sample) const;

  uint64_t windows_per_epoch() const { return windows_; }
  int64_t local_batch() const { return options_.global_batch / options_.dp_size; }
  int64_t row_length() const { return options_.seq_len + 1; }
  const TokenCorpus& corpus() const { return *corpus_; }
  const LoaderOptions& options() const { return options_; }

 private:
  Loader(std::shared_ptr<const TokenCorpus> corpus, const LoaderOptions& options, uint64_t windows);

  std::shared_ptr<const TokenCorpus> corpus_;
  LoaderOptions options_;
  uint64_t windows_;
};

}  // namespace nats::data
