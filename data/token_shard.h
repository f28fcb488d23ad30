// data/token_shard.h
//
// A token shard: one file holding a tokenized split (`nats prepare` writes train.tok and val.tok).
//
// Layout, all integers little-endian:
//   [0, 64)            header: magic "NATSTOK\0", format version, header size, vocab size, token width in bytes
//                      (2 = uint16 when every id fits, i.e. vocab_size <= 65536; else 4 = uint32), token count,
//                      document count, CRC32 of the token and offset bytes, CRC32 of the header itself
//   [64, 64 + n*w)     tokens
//   padding to 8 bytes
//   then               document start offsets, uint64 token indices, strictly increasing, the first is 0
// Counts and offsets are 64-bit throughout: no 2 GiB (or 4 G-token) limit.
//
// Writing goes to `<path>.tmp.<pid>`, is fsync'ed, then renamed over `path`: a reader sees the old shard or the
// complete new one, never a half-written file. Reading memory-maps the file; Open validates everything it can
// cheaply (magic, version, sizes, offsets) and, by default, the checksum of the payload (one pass, ~1 GB/s).
// Every user-facing error is an absl::Status naming the file and saying how to re-create it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace nats::data {

inline constexpr char kTokenShardMagic[8] = {'N', 'A', 'T', 'S', 'T', 'O', 'K', '\0'};
inline constexpr uint32_t kTokenShardVersion = 1;
inline constexpr uint32_t kTokenShardHeaderSize = 64;

// Bytes per stored token for a vocabulary: 2 when every id (< vocab_size) fits in uint16, else 4.
int TokenWidthForVocab(int64_t vocab_size);

// Streams documents into a new shard. Usage: Create, AddDocument per document, Finish.
// Nothing is visible at `path` until Finish succeeds; destroying an unfinished writer removes its temp file.
class TokenShardWriter {
 public:
  static absl::StatusOr<TokenShardWriter> Create(const std::string& path, int64_t vocab_size);
  TokenShardWriter(TokenShardWriter&& other) noexcept;
  TokenShardWriter& operator=(TokenShardWriter&&) = delete;
  TokenShardWriter(const TokenShardWriter&) = delete;
  ~TokenShardWriter();

  // Appends one document; ids must lie in [0, vocab_size) (InvalidArgument otherwise, nothing appended).
  absl::Status AddDocument(absl::Span<const int32_t> tokens);
  // Writes offsets and header, fsyncs, renames into place. The writer is unusable afterwards.
  absl::Status Finish();

  uint64_t num_tokens() const { return num_tokens_; }

 private:
  TokenShardWriter(std::string path, std::string tmp_path, int fd, int64_t vocab_size);
  absl::Status WriteAll(const void* data, size_t size);

  std::string path_;
  std::string tmp_path_;
  int fd_ = -1;
  int64_t vocab_size_ = 0;
  int width_ = 0;
  uint64_t num_tokens_ = 0;
  uint32_t crc_ = 0;
  std::vector<uint64_t> doc_starts_;
  std::vector<unsigned char> buffer_;
};

// Convenience for tests and small inputs: one shard from whole documents.
absl::Status WriteTokenShard(const std::string& path, int64_t vocab_size,
                             const std::vector<std::vector<int32_t>>& documents);

// A read-only, memory-mapped shard. Move-only; the mapping lives as long as the object.
class TokenShard {
 public:
  struct OpenOptions {
    // Checksum the whole payload on open. Off only where the caller has just verified it (costs one read pass).
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
  int token_width() const { return width_; }
  uint64_t num_tokens() const { return num_tokens_; }
  uint64_t num_documents() const { return num_docs_; }
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
  int width_ = 0;
  uint64_t num_tokens_ = 0;
  uint64_t num_docs_ = 0;
  uint32_t checksum_ = 0;
  const unsigned char* tokens_ = nullptr;
  const uint64_t* doc_starts_ = nullptr;
};

}  // namespace nats::data
