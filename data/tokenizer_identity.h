// data/tokenizer_identity.h
//
// Which tokenizer produced a token stream: recorded in every token shard (data/token_shard.h) and compared
// with the model's data.tokenizer before training or evaluation, so a shard of byte ids never trains a GPT-2
// model.
#pragma once

#include <cstdint>
#include <string>

namespace nats::data {

struct TokenizerIdentity {
  std::string name;  // the data.tokenizer value, e.g. "gpt2"; empty = unknown (version-1 shards, tests)
  uint64_t vocab_hash = 0;  // Tokenizer::vocabulary_hash(): the first 8 bytes of a SHA-256 of the vocabulary
  bool known() const { return !name.empty(); }
  bool operator==(const TokenizerIdentity& o) const { return name == o.name && vocab_hash == o.vocab_hash; }
  bool operator!=(const TokenizerIdentity& o) const { return !(*this == o); }
};

}  // namespace nats::data
