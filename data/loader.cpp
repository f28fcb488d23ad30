// data/loader.cpp: seeded window permutation, training batches, sequential evaluation windows.
#include "data/loader.h"

#include <cstdio>
#include <cstdlib>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "data/mix64.h"

namespace nats::data {
namespace {

void CheckOrDie(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "FATAL loader: %s\n", what);
    std::abort();
  }
}

}  // namespace

WindowPermutation::WindowPermutation(uint64_t n, uint64_t key) : n_(n) {
  // Feistel on an even number of bits 2h with 2^(2h) >= n: the walk below needs < 4 rounds on average.
  int bits = 2;
  while (bits < 64 && (uint64_t{1} << bits) < n) bits += 2;
  half_bits_ = bits / 2;
  half_mask_ = (uint64_t{1} << half_bits_) - 1;
  for (int r = 0; r < 6; ++r) round_keys_[r] = Mix64(key ^ Mix64(static_cast<uint64_t>(r) + 1));
}

uint64_t WindowPermutation::Feistel(uint64_t x) const {
  uint64_t left = x >> half_bits_, right = x & half_mask_;
  for (uint64_t k : round_keys_) {
    uint64_t next = left ^ (Mix64(right ^ k) & half_mask_);
    left = right;
    right = next;
  }
  return (left << half_bits_) | right;
}

uint64_t WindowPermutation::operator()(uint64_t i) const {
  CheckOrDie(i < n_, "WindowPermutation index out of range");
  // Cycle walking: Feistel permutes [0, 2^bits); following its cycle from i until it re-enters [0, n) yields
  // a permutation of [0, n).
  uint64_t y = Feistel(i);
  while (y >= n_) y = Feistel(y);
  return y;
}

uint64_t NumWindows(uint64_t num_tokens, int64_t seq_len) {
  if (seq_len < 1 || num_tokens < static_cast<uint64_t>(seq_len) + 1) return 0;
  return (num_tokens - 1) / static_cast<uint64_t>(seq_len);
}

absl::StatusOr<std::vector<int32_t>> EvalWindows(const TokenCorpus& corpus, int64_t seq_len, uint64_t first,
                                                 uint64_t count) {
  uint64_t windows = NumWindows(corpus.num_tokens(), seq_len);
  if (windows == 0) {
    return absl::InvalidArgumentError(absl::StrCat(corpus.path(), ": ", corpus.num_tokens(),
                                                   " tokens, fewer than model.context_length + 1 = ",
                                                   seq_len + 1, "; use a shorter model.context_length"));
  }
  if (first > windows || count > windows - first) {
    return absl::OutOfRangeError(absl::StrCat(
        corpus.path(), ": evaluation windows [", first, ", ", first + count, ") pass the last of its ",
        windows, " windows of ", seq_len + 1, " tokens; lower train.eval_windows"));
  }
  const uint64_t row = static_cast<uint64_t>(seq_len) + 1;
  std::vector<int32_t> out(count * row);
  for (uint64_t i = 0; i < count; ++i) {
    corpus.Read((first + i) * static_cast<uint64_t>(seq_len), row, out.data() + i * row);
  }
  return out;
}

absl::StatusOr<Loader> Loader::Create(std::shared_ptr<const TokenCorpus> corpus,
                                      const LoaderOptions& options) {
  CheckOrDie(corpus != nullptr, "Loader::Create without a corpus");
  if (options.seq_len < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("model.context_length must be at least 1 (got ", options.seq_len, ")"));
  }
  uint64_t windows = NumWindows(corpus->num_tokens(), options.seq_len);
  if (windows == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        corpus->path(), ": ", corpus->num_tokens(), " tokens, fewer than model.context_length + 1 = ",
        options.seq_len + 1, "; use a shorter model.context_length or a larger corpus"));
  }
  if (options.global_batch < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("train.batch_size must be at least 1 (got ", options.global_batch, ")"));
  }
  if (options.dp_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("parallel.dp must be at least 1 (got ", options.dp_size, ")"));
  }
  if (options.global_batch % options.dp_size != 0) {
    return absl::InvalidArgumentError(absl::StrCat("train.batch_size (", options.global_batch,
                                                   ") is not divisible by parallel.dp (", options.dp_size,
                                                   "); make train.batch_size a multiple of parallel.dp"));
  }
  if (options.dp_rank < 0 || options.dp_rank >= options.dp_size) {
    return absl::InvalidArgumentError(absl::StrCat("data-parallel rank ", options.dp_rank,
                                                   " is outside [0, parallel.dp = ", options.dp_size, ")"));
  }
  return Loader(std::move(corpus), options, windows);
}

Loader::Loader(std::shared_ptr<const TokenCorpus> corpus, const LoaderOptions& options, uint64_t windows)
    : corpus_(std::move(corpus)), options_(options), windows_(windows) {}

uint64_t Loader::WindowOfSample(uint64_t sample) const {
  uint64_t epoch = sample / windows_;
  // The key depends on (seed, epoch) only, so any rank can compute any sample's window without state.
  WindowPermutation perm(windows_, Mix64(options_.seed) ^ Mix64(epoch ^ 0x5EED5EED5EED5EEDull));
  return perm(sample % windows_);
}

std::vector<int32_t> Loader::Batch(uint64_t consumed_samples) const {
  const uint64_t rows = static_cast<uint64_t>(local_batch());
  const uint64_t row = static_cast<uint64_t>(row_length());
  const uint64_t first = consumed_samples + static_cast<uint64_t>(options_.dp_rank) * rows;
  std::vector<int32_t> out(rows * row);
  for (uint64_t j = 0; j < rows; ++j) {
    uint64_t window = WindowOfSample(first + j);
    corpus_->Read(window * static_cast<uint64_t>(options_.seq_len), row, out.data() + j * row);
  }
  return out;
}

}  // namespace nats::data
