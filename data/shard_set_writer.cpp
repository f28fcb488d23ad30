// data/shard_set_writer.cpp: numbered shards of bounded size for one split.
#include "data/shard_set_writer.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_format.h"

namespace nats::data {

ShardSetWriter::ShardSetWriter(std::string dir, int64_t vocab_size, TokenizerIdentity tokenizer,
                               uint64_t max_tokens)
    : dir_(std::move(dir)),
      vocab_size_(vocab_size),
      tokenizer_(std::move(tokenizer)),
      max_tokens_(std::max<uint64_t>(1, max_tokens)) {}

absl::Status ShardSetWriter::Append(absl::Span<const int32_t> tokens) {
  while (!tokens.empty()) {
    if (!current_.has_value()) {
      const std::string path = absl::StrFormat("%s/%06d.tok", dir_, shards_.size());
      absl::StatusOr<TokenShardWriter> writer = TokenShardWriter::Create(path, vocab_size_, tokenizer_);
      if (!writer.ok()) return writer.status();
      current_.emplace(*std::move(writer));
      shards_.push_back({path, 0, 0, 0});
    }
    const uint64_t room = max_tokens_ - current_->num_tokens();
    const absl::Span<const int32_t> part = tokens.subspan(0, std::min<uint64_t>(room, tokens.size()));
    // A shard's first tokens always start a document there: the reader needs document 0 at offset 0.
    const bool starts = new_document_ || current_->num_documents() == 0;
    absl::Status s = starts ? current_->AddDocument(part) : current_->AppendToDocument(part);
    if (!s.ok()) return s;
    if (new_document_) ++total_documents_;
    new_document_ = false;
    total_tokens_ += part.size();
    tokens.remove_prefix(part.size());
    if (current_->num_tokens() == max_tokens_) {
      if (absl::Status f = FinishShard(); !f.ok()) return f;
    }
  }
  return absl::OkStatus();
}

absl::Status ShardSetWriter::FinishShard() {
  WrittenShard& shard = shards_.back();
  shard.tokens = current_->num_tokens();
  shard.documents = current_->num_documents();
  absl::Status s = current_->Finish();
  shard.checksum = current_->checksum();
  current_.reset();
  return s;
}

absl::Status ShardSetWriter::Finish() { return current_.has_value() ? FinishShard() : absl::OkStatus(); }

}  // namespace nats::data
