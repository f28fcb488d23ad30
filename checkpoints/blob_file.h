// checkpoints/blob_file.h
//
// The per-rank blob `rank_<r>.bin` of a checkpoint: a 64-byte header (magic "NATSBLB1", format version,
// rank, step; native little-endian integers) followed by tensor slices, each starting at a 64-byte
// aligned offset (zero padding between them) so that a reader may map or DMA them directly. A slice's
// CRC-32C is computed while it is written and returned in its ShardSlice; the manifest holds it.
// The blob alone is not a checkpoint: the manifest, written after every blob is fsynced, is the commit.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "checkpoints/checkpoint.pb.h"

namespace nats::checkpoint {

inline constexpr int64_t kBlobAlignment = 64;
inline constexpr int64_t kBlobHeaderBytes = 64;
inline constexpr uint32_t kBlobFormatVersion = 1;

// "rank_<r>.bin"
std::string BlobFileName(int rank);

// OK when `header` (kBlobHeaderBytes bytes read from `path`) is a blob header of (rank, step). The error
// says which save the file belongs to, so mixed-up directories are named as such.
absl::Status CheckBlobHeader(const char* header, const std::string& path, int rank, int64_t step);

class BlobWriter {
 public:
  // Creates (truncates) <dir>/rank_<rank>.bin and writes the header.
  static absl::StatusOr<std::unique_ptr<BlobWriter>> Create(const std::string& dir, int rank, int64_t step);
  // Closes the file without fsync if Finish() was not called (an aborted save; the file is garbage).
  ~BlobWriter();
  BlobWriter(const BlobWriter&) = delete;
  BlobWriter& operator=(const BlobWriter&) = delete;

  // Appends `bytes` bytes of host memory at the next aligned offset. Returns the slice with rank, file,
  // file_offset, bytes and crc32c set; the caller sets global_offset and numel.
  absl::StatusOr<ShardSlice> Append(const void* data, uint64_t bytes);
  // fsync + close; returns the file's final size. Must be called once, after the last Append.
  absl::StatusOr<uint64_t> Finish();

  const std::string& path() const { return path_; }
  const std::string& file_name() const { return file_name_; }

 private:
  BlobWriter(int fd, std::string path, std::string file_name, int rank);
  absl::Status Write(const void* data, uint64_t bytes);

  int fd_ = -1;
  std::string path_;
  std::string file_name_;
  int rank_ = 0;
  uint64_t size_ = 0;
};

}  // namespace nats::checkpoint
