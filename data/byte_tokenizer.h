// data/byte_tokenizer.h
//
// The trivial tokenizer: byte b (0..255) is id b, <|endoftext|> is id 256, vocab_size 257.
// Useful for tests and for models that must not depend on a downloaded vocabulary.
#pragma once

#include "data/tokenizer.h"

namespace nats::data {

class ByteTokenizer final : public Tokenizer {
 public:
  static constexpr int32_t kEotId = 256;

  std::vector<int32_t> Encode(std::string_view text) const override;
  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids) const override;
  int32_t vocab_size() const override { return kEotId + 1; }
  int32_t eot_id() const override { return kEotId; }
  std::string name() const override { return "byte"; }
  // Of the text "byte: ids 0-255 are the bytes, 256 is <|endoftext|>".
  uint64_t vocabulary_hash() const override;
};

}  // namespace nats::data
