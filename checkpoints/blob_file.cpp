#include "checkpoints/blob_file.h"

#include <c10/util/Exception.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "checkpoints/crash_point.h"
#include "checkpoints/crc32c.h"
#include "checkpoints/durable_file.h"

namespace nats::checkpoint {
namespace {

constexpr char kMagic[8] = {'N', 'A', 'T', 'S', 'B', 'L', 'B', '1'};

// CRC and write alternate over chunks of this size, so each chunk is still in cache when written
// (a 150 MB slice would otherwise be streamed from memory twice).
constexpr uint64_t kChunkBytes = 4 << 20;

struct BlobHeader {
  char magic[8];
  uint32_t version;
  int32_t rank;
  int64_t step;
  char reserved[kBlobHeaderBytes - 24];
};
static_assert(sizeof(BlobHeader) == kBlobHeaderBytes, "blob header layout");

}  // namespace

std::string BlobFileName(int rank) { return absl::StrCat("rank_", rank, ".bin"); }

absl::Status CheckBlobHeader(const char* header, const std::string& path, int rank, int64_t step) {
  BlobHeader h;
  std::memcpy(&h, header, sizeof(h));
  if (std::memcmp(h.magic, kMagic, sizeof(kMagic)) != 0) {
    return absl::DataLossError(
        absl::StrCat(path, ": not a checkpoint blob (bad magic); the file is damaged"));
  }
  if (h.version != kBlobFormatVersion) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, ": blob format version ", h.version, ", this build reads ", kBlobFormatVersion));
  }
  if (h.rank != rank || h.step != step) {
    return absl::DataLossError(absl::StrCat(path, ": the file was written by rank ", h.rank, " at step ",
                                            h.step, " but the manifest expects rank ", rank, " at step ",
                                            step, "; the directory mixes files of different saves"));
  }
  return absl::OkStatus();
}

BlobWriter::BlobWriter(int fd, std::string path, std::string file_name, int rank)
    : fd_(fd), path_(std::move(path)), file_name_(std::move(file_name)), rank_(rank) {}

BlobWriter::~BlobWriter() {
  if (fd_ >= 0) ::close(fd_);
}

absl::StatusOr<std::unique_ptr<BlobWriter>> BlobWriter::Create(const std::string& dir, int rank,
                                                               int64_t step) {
  const std::string name = BlobFileName(rank);
  const std::string path = absl::StrCat(dir, "/", name);
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus("cannot create checkpoint blob", path, errno);
  std::unique_ptr<BlobWriter> writer(new BlobWriter(fd, path, name, rank));
  BlobHeader h;
  std::memset(&h, 0, sizeof(h));
  std::memcpy(h.magic, kMagic, sizeof(kMagic));
  h.version = kBlobFormatVersion;
  h.rank = rank;
  h.step = step;
  if (absl::Status s = writer->Write(&h, sizeof(h)); !s.ok()) return s;
  return writer;
}

absl::Status BlobWriter::Write(const void* data, uint64_t bytes) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const uint64_t allowed = WriteAllowance(std::min<uint64_t>(bytes, 1u << 30));
    if (allowed == 0) return ErrnoStatus("cannot write checkpoint blob", path_, ENOSPC);  // injected (tests)
    const ssize_t n = ::write(fd_, p, allowed);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("cannot write checkpoint blob", path_, errno);
    }
    p += n;
    bytes -= static_cast<uint64_t>(n);
    size_ += static_cast<uint64_t>(n);
  }
  return absl::OkStatus();
}

absl::StatusOr<ShardSlice> BlobWriter::Append(const void* data, uint64_t bytes) {
  TORCH_INTERNAL_ASSERT(fd_ >= 0, "BlobWriter::Append after Finish");
  static const char kZeros[kBlobAlignment] = {};
  if (const uint64_t pad = (kBlobAlignment - size_ % kBlobAlignment) % kBlobAlignment; pad > 0) {
    if (absl::Status s = Write(kZeros, pad); !s.ok()) return s;
  }
  ShardSlice slice;
  slice.set_rank(rank_);
  slice.set_file(file_name_);
  slice.set_file_offset(size_);
  slice.set_bytes(bytes);
  uint32_t crc = 0;
  const auto* p = static_cast<const unsigned char*>(data);
  for (uint64_t done = 0; done < bytes;) {
    const uint64_t n = std::min(kChunkBytes, bytes - done);
    crc = Crc32c(crc, p + done, n);
    if (absl::Status s = Write(p + done, n); !s.ok()) return s;
    done += n;
  }
  slice.set_crc32c(crc);
  CrashPoint("blob_slice_written");
  return slice;
}

absl::StatusOr<uint64_t> BlobWriter::Finish() {
  TORCH_INTERNAL_ASSERT(fd_ >= 0, "BlobWriter::Finish called twice");
  absl::Status status;
  if (::fsync(fd_) != 0) status = ErrnoStatus("cannot fsync checkpoint blob", path_, errno);
  if (::close(fd_) != 0 && status.ok()) status = ErrnoStatus("cannot close checkpoint blob", path_, errno);
  fd_ = -1;
  if (!status.ok()) return status;
  CrashPoint("blob_synced");
  return size_;
}

}  // namespace nats::checkpoint
