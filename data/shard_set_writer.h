// data/shard_set_writer.h
//
// Writes one split of a prepared corpus as numbered shards <dir>/000000.tok, 000001.tok, ... of at most
// `max_tokens` tokens each (data/token_shard.h), which data/token_corpus.h reads back as one stream. A
// document that does not fit in the current shard continues at the start of the next one, so every shard but
// the last holds exactly max_tokens tokens. Shards are created only when there are tokens for them: a split
// that receives nothing writes no file. Each shard appears at its path only once complete (TokenShardWriter's
// rename).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "data/token_shard.h"
#include "data/tokenizer_identity.h"

namespace nats::data {

struct WrittenShard {
  std::string path;
  uint64_t tokens = 0;
  uint64_t documents = 0;  // document starts recorded in the shard (a continued document counts in both)
  uint32_t checksum = 0;
};

class ShardSetWriter {
 public:
  ShardSetWriter(std::string dir, int64_t vocab_size, TokenizerIdentity tokenizer, uint64_t max_tokens);

  // The next Append starts a new document.
  void StartDocument() { new_document_ = true; }
  // Appends tokens to the current document (after StartDocument, to a new one), rotating shards as needed.
  absl::Status Append(absl::Span<const int32_t> tokens);
  // Finishes the last shard. The writer is unusable afterwards.
  absl::Status Finish();

  const std::vector<WrittenShard>& shards() const { return shards_; }
  uint64_t num_tokens() const { return total_tokens_; }
  uint64_t num_documents() const { return total_documents_; }  // StartDocument calls followed by tokens

 private:
  absl::Status FinishShard();

  std::string dir_;
  int64_t vocab_size_;
  TokenizerIdentity tokenizer_;
  uint64_t max_tokens_;
  std::optional<TokenShardWriter> current_;
  std::vector<WrittenShard> shards_;
  bool new_document_ = true;
  uint64_t total_tokens_ = 0;
  uint64_t total_documents_ = 0;
};

}  // namespace nats::data
