// data/tokenizer.h
//
// Text <-> token ids (docs/architecture.md section 5, data/). A Tokenizer is immutable after construction, so
// one instance may be shared by threads. Encode treats its input as plain text: the text
// "<|endoftext|>" is encoded as ordinary characters, never as eot_id(); callers insert eot_id()
// between documents themselves. Decode(Encode(x)) == x for every byte string x.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "data/tokenizer_identity.h"

namespace nats::data {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Token ids of `text` (raw bytes; need not be valid UTF-8). Every id is in [0, vocab_size()).
  virtual std::vector<int32_t> Encode(std::string_view text) const = 0;

  // The bytes the ids stand for; eot_id() decodes to "<|endoftext|>". InvalidArgumentError
  // naming the first id outside [0, vocab_size()).
  virtual absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids) const = 0;

  // Number of ids, special ones included.
  virtual int32_t vocab_size() const = 0;

  // The end-of-text id that separates documents.
  virtual int32_t eot_id() const = 0;

  // The config value that selects this tokenizer ("gpt2", "byte").
  virtual std::string name() const = 0;

  // The first 8 bytes (big-endian) of a SHA-256 that pins the vocabulary: of the ranks file for gpt2, of a
  // fixed description for byte. Two tokenizers with equal name and hash give the same ids.
  virtual uint64_t vocabulary_hash() const = 0;

  TokenizerIdentity identity() const { return {name(), vocabulary_hash()}; }
};

// The first 8 bytes of a lowercase hex SHA-256 digest, big-endian (the digest's first 16 hex digits).
uint64_t VocabularyHashFromSha256Hex(std::string_view hex_digest);

// The tokenizer selected by the config field data.tokenizer:
//   "gpt2": GPT-2 BPE, ranks from <data_dir>/tokenizer/r50k_base.tiktoken (data_dir empty: DefaultCacheDir(),
//           data/cache_dir.h)
//           (launch/fetch_tokenizer.sh fetches it);
//   "byte": one id per byte plus <|endoftext|>.
// InvalidArgumentError for any other name; the gpt2 loader's error when its file is missing or
// not the expected one.
absl::StatusOr<std::unique_ptr<Tokenizer>> MakeTokenizer(std::string_view name, const std::string& data_dir);

// The identity MakeTokenizer(name, ...) would have, without loading any file (to check a shard against a
// model config). InvalidArgumentError for an unknown name, as MakeTokenizer.
absl::StatusOr<TokenizerIdentity> TokenizerIdentityOf(std::string_view name);

}  // namespace nats::data
