#include "data/byte_tokenizer.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "data/sha256.h"

namespace nats::data {

uint64_t ByteTokenizer::vocabulary_hash() const {
  static const uint64_t hash =
      VocabularyHashFromSha256Hex(Sha256Hex("byte: ids 0-255 are the bytes, 256 is <|endoftext|>"));
  return hash;
}

std::vector<int32_t> ByteTokenizer::Encode(std::string_view text) const {
  std::vector<int32_t> ids(text.size());
  for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
  return ids;
}

absl::StatusOr<std::string> ByteTokenizer::Decode(absl::Span<const int32_t> ids) const {
  std::string text;
  text.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    if (id >= 0 && id < kEotId) {
      text.push_back(static_cast<char>(static_cast<unsigned char>(id)));
    } else if (id == kEotId) {
      text += "<|endoftext|>";
    } else {
      return absl::InvalidArgumentError(absl::StrCat("byte tokenizer: token id ", id, " at position ", i,
                                                     " is outside [0, ", vocab_size(), ")"));
    }
  }
  return text;
}

}  // namespace nats::data
