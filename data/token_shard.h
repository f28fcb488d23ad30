// data/token_shard.h
//
// A token shard: one file holding tokenized documents (`nats prepare` writes the train and validation shards;
// data/token_corpus.h reads several as one stream).
//
// Layout, all integers little-endian (H = header size: 128 in version 2, 64 in version 1):
//   [0, H)             header: magic "NATSTOK\0", format version, header size, vocab size, token width in
//   bytes
//                      (2 = uint16 when every id fits, i.e. vocab_size <= 65536; else 4 = uint32), token
//                      count, document count, CRC32 of the token and offset bytes; version 2 adds the
//                      tokenizer's name and a 64-bit hash of its vocabulary (so a model refuses a shard from
//                      another tokenizer); the last 4 header bytes are the CRC32 of the header before them
//   [H, H + n*w)       tokens
//   padding to 8 bytes
//   then               document start offsets, uint64 token indices, strictly increasing, the first is 0
// Counts and offsets are 64-bit throughout: no 2 GiB (or 4 G-token) limit.
//
// Writing goes to `<path>.tmp.<pid>`, is fsync'ed, then renamed over `path`: a reader sees the old shard or
// the complete new one, never a half-written file. Reading memory-maps the file; Open validates everything it
// can cheaply (magic, version, sizes, offsets) and, by default, the checksum of the payload (one pass, ~1
// GB/s). Every user-facing error is an absl::Status naming the file and saying how to re-create it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "data/tokenizer_identity.h"

namespace nats::data {

inline constexpr char kTokenShardMagic[8] = {'N', 'A', 'T', 'S', 'T', 'O', 'K', '\0'};
inline constexpr uint32_t kTokenShardVersion = 2;       // written; version 1 is still read
inline constexpr uint32_t kTokenShardHeaderSize = 128;  // of version 2
inline constexpr uint32_t kTokenShardHeaderSizeV1 = 64;
inline constexpr size_t kTokenizerNameCapacity = 32;  // bytes, NUL-padded

// Bytes per stored token for a vocabulary: 2 when every id (< vocab_size) fits in uint16, else 4.
int TokenWidthForVocab(int64_t vocab_size);

// Streams documents into a new shard. Usage: Create, AddDocument per document, Finish.
// Nothing is visible at `path` until Finish succeeds; destroying an unfinished writer removes its temp file.
class TokenShardWriter {
 public:
  // InvalidArgument if the tokenizer name exceeds kTokenizerNameCapacity - 1 bytes.
  static absl::StatusOr<TokenShardWriter> Create(const std::string& path, int64_t vocab_size,
                                                 const TokenizerIdentity& tokenizer = {});
  TokenShardWriter(TokenShardWriter&& other) noexcept;
  TokenShardWriter& operator=(TokenShardWriter&&) = delete;
  TokenShardWriter(const TokenShardWriter&) = delete;
  ~TokenShardWriter();

  // Appends one document; ids must lie in [0, vocab_size) (InvalidArgument otherwise, nothing appended).
  absl::Status AddDocument(absl::Span<const int32_t> tokens);
  // Appends tokens to the last document (there must be one; a caller bug otherwise). Same id check.
  absl::Status AppendToDocument(absl::Span<const int32_t> tokens);
  // Writes offsets and header, fsyncs, renames into place. The writer is unusable afterwards.
  absl::Status Finish();

  uint64_t num_tokens() const { return num_tokens_; }
  uint64_t num_documents() const { return doc_starts_.size(); }
  uint32_t checksum() const { return crc_; }  // of the payload; final once Finish has succeeded

 private:
  absl::Status CheckIds(absl::Span<const int32_t> tokens) const;
  absl::Status AppendTokens(absl::Span<const int32_t> tokens);
  TokenShardWriter(std::string path, std::string tmp_path, int fd, int64_t vocab_size,
                   TokenizerIdentity tokenizer);
  absl::Status WriteAll(const void* data, size_t size);

  std::string path_;
  std::string tmp_path_;
  int fd_ = -1;
  int64_t vocab_size_ = 0;
  TokenizerIdentity tokenizer_;
  int width_ = 0;
  uint64_t num_tokens_ = 0;
  uint32_t crc_ = 0;
  std::vector<uint64_t> doc_starts_;
  std::vector<unsigned char> buffer_;
};

// Convenience for tests and small inputs: one shard from whole documents.
absl::Status WriteTokenShard(const std::string& path, int64_t vocab_size,
                             const std::vector<std::vector<int32_t>>& documents,
                             const TokenizerIdentity& tokenizer = {});

// A read-only, memory-mapped shard. Move-only; the mapping lives as long as the object.
class TokenShard {
 public:
  struct OpenOptions {
    // Checksum the whole payload on open. Off only where the caller has just verified it (costs one read
    // pass).
    bool verify_checksum = true;
  };
  static absl::StatusOr<TokenShard> Open(const std::string& path, OpenOptions options);
  static absl::StatusOr<TokenShard> Open(const std::string& path) { return Open(path, OpenOptions()); }

  TokenShard(TokenShard&& other) noexcept;
  TokenShard& operator=(TokenShard&& other) noexcept;
  TokenShard(const TokenShard&) = delete;
  ~TokenShard();

  // Recomputes the payload checksum; DataLoss naming the file on mismatch.
  absl::Status Verify() const;

  const std::string& path() const { return path_; }
  int64_t vocab_size() const { return vocab_size_; }
  int format_version() const { return version_; }
  const TokenizerIdentity& tokenizer() const { return tokenizer_; }  // unknown for version 1
  int token_width() const { return width_; }
  uint64_t num_tokens() const { return num_tokens_; }
  uint64_t num_documents() const { return num_docs_; }
  uint32_t checksum() const { return checksum_; }  // CRC32 of the payload, as stored in the header
  // Token index where each document starts.
  absl::Span<const uint64_t> document_starts() const { return {doc_starts_, num_docs_}; }

  int32_t token(uint64_t i) const;  // i < num_tokens() (checked; abort on violation: a caller bug)
  // Copies tokens [begin, begin + count) into out[0, count); the range must lie inside the shard (checked).
  void Read(uint64_t begin, uint64_t count, int32_t* out) const;

 private:
  TokenShard() = default;
  void Unmap();

  std::string path_;
  const unsigned char* map_ = nullptr;
  uint64_t map_size_ = 0;
  int64_t vocab_size_ = 0;
  int version_ = 0;
  TokenizerIdentity tokenizer_;
  int width_ = 0;
  uint64_t num_tokens_ = 0;
  uint64_t num_docs_ = 0;
  uint32_t checksum_ = 0;
  const unsigned char* tokens_ = nullptr;
  const uint64_t* doc_starts_ = nullptr;
};

}  // namespace nats::data
