// data/token_corpus.h
//
// A token stream made of one or more shards (data/token_shard.h), read as their concatenation in order: what
// data.train_path and data.val_path name. Every shard starts with a document, and `nats prepare` puts the
// end-of-text id at the start of every document, so a window that crosses a shard boundary sees a document
// boundary, exactly as one inside a shard does. The loader's cursor (consumed samples) indexes windows of
// this concatenation, so resume is exact across shard boundaries with no per-shard state.
//
// A path spec is one of:
//   - a shard file                                   data/books/train.tok
//   - a directory: every *.tok directly inside it    data/my_corpus/train
//   - a glob(3) pattern (contains * ? or [)          data/my_corpus/train/*.tok
// Shards are ordered by file name (byte order), so the stream does not depend on the directory listing. All
// shards must share one vocabulary size and one tokenizer identity.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "data/token_shard.h"
#include "data/tokenizer_identity.h"

namespace nats::data {

class TokenCorpus {
 public:
  // NotFound naming the spec when it matches no shard; the shard's error when one does not open;
  // InvalidArgument naming both files when two shards disagree on vocabulary or tokenizer.
  static absl::StatusOr<TokenCorpus> Open(const std::string& spec,
                                          TokenShard::OpenOptions options = TokenShard::OpenOptions());
  // A corpus of already opened shards (in the given order); `spec` names it in messages. Same checks as Open.
  static absl::StatusOr<TokenCorpus> FromShards(std::string spec, std::vector<TokenShard> shards);

  TokenCorpus(TokenCorpus&&) noexcept = default;
  TokenCorpus& operator=(TokenCorpus&&) noexcept = default;

  // The spec it was opened from: the name to put in messages.
  const std::string& path() const { return spec_; }
  int64_t vocab_size() const { return vocab_size_; }
  const TokenizerIdentity& tokenizer() const { return tokenizer_; }
  uint64_t num_tokens() const { return starts_.back(); }
  uint64_t num_documents() const;
  size_t num_shards() const { return shards_.size(); }
  const TokenShard& shard(size_t i) const { return shards_[i]; }

  // Copies tokens [begin, begin + count) of the concatenation into out[0, count); the range must lie inside
  // (checked; abort on violation: a caller bug).
  void Read(uint64_t begin, uint64_t count, int32_t* out) const;

  // A 64-bit fingerprint of the shard list: each shard's file name (without directory), token count and
  // payload checksum, in order. Equal fingerprints mean the same token stream (up to CRC collisions).
  uint64_t Fingerprint() const;

 private:
  TokenCorpus() = default;

  std::string spec_;
  std::vector<TokenShard> shards_;
  std::vector<uint64_t> starts_{0};  // starts_[i] = first token of shard i; starts_.back() = total
  int64_t vocab_size_ = 0;
  TokenizerIdentity tokenizer_;
};

// The shard files a spec names, sorted by file name; NotFound naming the spec when there are none.
absl::StatusOr<std::vector<std::string>> ExpandShardSpec(const std::string& spec);

// FailedPrecondition naming the corpus, both tokenizers and the fix when the corpus was written by a
// tokenizer other than `expected` (a corpus of unknown tokenizer, i.e. version-1 shards, passes), or
// InvalidArgument when its vocabulary is larger than `model_vocab_size`. `field` names the config field that
// chose the corpus.
absl::Status CheckCorpusFitsModel(const TokenCorpus& corpus, const std::string& field,
                                  const TokenizerIdentity& expected, int64_t model_vocab_size);

}  // namespace nats::data
