#include "checkpoints/checkpoint_reader.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "checkpoints/blob_file.h"
#include "checkpoints/checkpoint_dir.h"
#include "checkpoints/crc32c.h"
#include "checkpoints/dtype.h"
#include "checkpoints/durable_file.h"

namespace nats::checkpoint {
namespace {

at::IntArrayRef ShapeOf(const TensorEntry& t) { return at::IntArrayRef(t.shape().data(), t.shape_size()); }

// -1 when a dimension is negative or the product does not fit int64 (a damaged manifest; found by
// tests/fuzz/checkpoint_fuzz). ValidateManifest refuses those, so later callers always get the count.
int64_t NumelOf(const TensorEntry& t) {
  int64_t n = 1;
  for (int64_t d : t.shape()) {
    if (d < 0 || __builtin_mul_overflow(n, d, &n)) return -1;
  }
  return n;
}

absl::Status WithTensor(const std::string& name, const absl::Status& status) {
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat("tensor ", name, ": ", status.message()));
}

}  // namespace

std::string ShapeString(at::IntArrayRef shape) { return absl::StrCat("[", absl::StrJoin(shape, ", "), "]"); }

CheckpointReader::CheckpointReader(std::string dir, Manifest manifest)
    : dir_(std::move(dir)), manifest_(std::move(manifest)) {}

CheckpointReader::~CheckpointReader() {
  for (auto& [file, fd] : fds_) ::close(fd);
}

absl::StatusOr<std::unique_ptr<CheckpointReader>> CheckpointReader::Open(const std::string& step_dir) {
  absl::StatusOr<Manifest> manifest = ReadManifest(step_dir);
  if (!manifest.ok()) return manifest.status();
  std::unique_ptr<CheckpointReader> reader(new CheckpointReader(step_dir, *std::move(manifest)));
  for (const BlobFile& blob : reader->manifest_.blobs()) reader->blobs_[blob.file()] = &blob;
  for (int i = 0; i < reader->manifest_.tensors_size(); ++i)
    reader->index_[reader->manifest_.tensors(i).name()] = i;
  if (absl::Status s = reader->ValidateManifest(); !s.ok()) return s;
  return reader;
}

absl::Status CheckpointReader::ValidateManifest() const {
  const std::string where = absl::StrCat(dir_, "/", kManifestFileName, ": ");
  auto damaged = [&](const std::string& what) {
    return absl::DataLossError(absl::StrCat(where, what, "; the manifest is damaged, use an older step"));
  };
  if (static_cast<int>(blobs_.size()) != manifest_.blobs_size())
    return damaged("a blob file is listed twice");
  for (const BlobFile& blob : manifest_.blobs()) {
    if (blob.file().empty() || blob.file().find('/') != std::string::npos || blob.file()[0] == '.') {
      return damaged(absl::StrCat("blob name \"", blob.file(), "\" is not a plain file name"));
    }
  }
  if (static_cast<int>(index_.size()) != manifest_.tensors_size())
    return damaged("a tensor name is listed twice");
  for (const TensorEntry& t : manifest_.tensors()) {
    const int64_t element = ElementSize(t.dtype());
    if (element == 0) return damaged(absl::StrCat("tensor ", t.name(), " has an unknown dtype ", t.dtype()));
    for (int64_t d : t.shape()) {
      if (d < 0) return damaged(absl::StrCat("tensor ", t.name(), " has a negative dimension"));
    }
    const int64_t numel = NumelOf(t);
    if (numel < 0 || static_cast<uint64_t>(numel) > UINT64_MAX / static_cast<uint64_t>(element)) {
      return damaged(absl::StrCat("tensor ", t.name(), " has a shape whose size overflows 64 bits"));
    }
    uint64_t next = 0;
    for (const ShardSlice& s : t.slices()) {
      if (s.global_offset() != next) {
        return damaged(
            absl::StrCat("tensor ", t.name(), ": slices leave a gap or overlap at element ", next));
      }
      // numel <= the tensor's remaining elements first, so that neither product nor sum below can wrap.
      if (s.numel() == 0 || s.numel() > static_cast<uint64_t>(numel) - next ||
          s.bytes() != s.numel() * static_cast<uint64_t>(element)) {
        return damaged(
            absl::StrCat("tensor ", t.name(), ": a slice's byte count does not match its elements"));
      }
      auto blob = blobs_.find(s.file());
      if (blob == blobs_.end()) {
        return damaged(absl::StrCat("tensor ", t.name(), ": slice in unlisted file \"", s.file(), "\""));
      }
      if (s.file_offset() < static_cast<uint64_t>(kBlobHeaderBytes) ||
          s.file_offset() % kBlobAlignment != 0 || s.bytes() > blob->second->bytes() ||
          s.file_offset() > blob->second->bytes() - s.bytes()) {
        return damaged(absl::StrCat("tensor ", t.name(), ": slice at byte ", s.file_offset(),
                                    " lies outside ", s.file()));
      }
      next += s.numel();
    }
    if (next != static_cast<uint64_t>(numel)) {
      return damaged(absl::StrCat("tensor ", t.name(), ": slices cover ", next, " of ", numel, " elements"));
    }
  }
  return absl::OkStatus();
}

const TensorEntry* CheckpointReader::Find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &manifest_.tensors(it->second);
}

absl::Status CheckpointReader::CheckCompatible(const std::string& name, c10::ScalarType dtype,
                                               at::IntArrayRef shape, const std::string& hint) const {
  const TensorEntry* t = Find(name);
  if (t == nullptr) {
    return absl::NotFoundError(absl::StrCat("tensor ", name, " is not in checkpoint ", dir_, " (it has ",
                                            manifest_.tensors_size(), " tensors)", hint.empty() ? "" : "; ",
                                            hint));
  }
  const std::string suffix = hint.empty() ? "; was the model config changed?" : absl::StrCat("; ", hint);
  if (ToScalarType(t->dtype()) != dtype) {
    auto want = ToDType(dtype);
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor ", name, ": checkpoint dtype ", DTypeName(t->dtype()), " but the destination is ",
        want.ok() ? DTypeName(*want) : c10::toString(dtype), suffix));
  }
  if (ShapeOf(*t) != shape) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, ": checkpoint shape ",
                                                   ShapeString(ShapeOf(*t)), " but the model has ",
                                                   ShapeString(shape), suffix));
  }
  return absl::OkStatus();
}

absl::StatusOr<int> CheckpointReader::BlobFd(const std::string& file) {
  if (auto it = fds_.find(file); it != fds_.end()) return it->second;
  const BlobFile& blob = *blobs_.at(file);
  const std::string path = absl::StrCat(dir_, "/", file);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    return absl::Status(ErrnoStatus("cannot open checkpoint blob", path, err).code(),
                        absl::StrCat("cannot open checkpoint blob ", path, ": ", std::strerror(err),
                                     "; the checkpoint is incomplete (partly copied?), use an older step"));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return ErrnoStatus("cannot stat checkpoint blob", path, err);
  }
  if (static_cast<uint64_t>(st.st_size) != blob.bytes()) {
    ::close(fd);
    return absl::DataLossError(absl::StrCat(
        path, static_cast<uint64_t>(st.st_size) < blob.bytes() ? " is truncated (" : " has the wrong size (",
        st.st_size, " bytes, the manifest expects ", blob.bytes(),
        "); the checkpoint is damaged, use an older step"));
  }
  char header[kBlobHeaderBytes];
  if (::pread(fd, header, sizeof(header), 0) != static_cast<ssize_t>(sizeof(header))) {
    ::close(fd);
    return absl::DataLossError(absl::StrCat(path, ": cannot read the blob header"));
  }
  if (absl::Status s = CheckBlobHeader(header, path, blob.rank(), manifest_.step()); !s.ok()) {
    ::close(fd);
    return s;
  }
  fds_[file] = fd;
  return fd;
}

absl::Status CheckpointReader::ReadSliceBytes(const TensorEntry& tensor, const ShardSlice& slice,
                                              uint64_t skip, uint64_t bytes, void* dst, bool verify) {
  TORCH_INTERNAL_ASSERT(!verify || (skip == 0 && bytes == slice.bytes()),
                        "a verified read covers the whole slice");
  absl::StatusOr<int> fd = BlobFd(slice.file());
  if (!fd.ok()) return WithTensor(tensor.name(), fd.status());
  const std::string path = absl::StrCat(dir_, "/", slice.file());
  char* p = static_cast<char*>(dst);
  // Read and CRC alternate over cache-sized chunks, so the CRC reads bytes still in cache instead of
  // streaming a 150 MB slice from memory a second time.
  constexpr uint64_t kChunkBytes = 4 << 20;
  uint32_t crc = 0;
  uint64_t done = 0;
  while (done < bytes) {
    const uint64_t want = std::min<uint64_t>(bytes - done, kChunkBytes);
    const ssize_t n = ::pread(*fd, p + done, want, static_cast<off_t>(slice.file_offset() + skip + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return WithTensor(tensor.name(), ErrnoStatus("cannot read checkpoint blob", path, errno));
    }
    if (n == 0) {
      return absl::DataLossError(
          absl::StrCat("tensor ", tensor.name(), ": ", path,
                       " ended early (truncated); the checkpoint is damaged, use an older step"));
    }
    if (verify) crc = Crc32c(crc, p + done, static_cast<size_t>(n));
    done += static_cast<uint64_t>(n);
  }
  if (verify && crc != slice.crc32c()) {
    return absl::DataLossError(absl::StrCat(
        "tensor ", tensor.name(), ": CRC mismatch in ", path, " at byte ", slice.file_offset(), " (",
        slice.bytes(), " bytes, elements [", slice.global_offset(), ", ",
        slice.global_offset() + slice.numel(), ")); the checkpoint is damaged, use an older step"));
  }
  return absl::OkStatus();
}

absl::Status CheckpointReader::Read(const std::string& name, int64_t global_offset, at::Tensor& out,
                                    bool verify_crc) {
  const TensorEntry* t = Find(name);
  if (t == nullptr) {
    return absl::NotFoundError(absl::StrCat("tensor ", name, " is not in checkpoint ", dir_, " (it has ",
                                            manifest_.tensors_size(), " tensors)"));
  }
  const c10::ScalarType dtype = ToScalarType(t->dtype());
  if (out.scalar_type() != dtype) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, ": checkpoint dtype ",
                                                   DTypeName(t->dtype()), " but the destination is ",
                                                   c10::toString(out.scalar_type())));
  }
  const int64_t n = out.numel();
  const int64_t total = NumelOf(*t);
  if (global_offset < 0 || global_offset + n > total) {
    return absl::OutOfRangeError(absl::StrCat("tensor ", name, ": elements [", global_offset, ", ",
                                              global_offset + n, ") requested but the checkpoint tensor has ",
                                              total, " (shape ", ShapeString(ShapeOf(*t)), ")"));
  }
  if (n == 0) return absl::OkStatus();
  const bool direct = out.device().is_cpu() && out.is_contiguous();
  at::Tensor staging = direct ? out : at::empty({n}, at::TensorOptions().dtype(dtype));
  char* base = static_cast<char*>(staging.data_ptr());
  const uint64_t element = static_cast<uint64_t>(ElementSize(t->dtype()));
  const uint64_t a = static_cast<uint64_t>(global_offset), b = a + static_cast<uint64_t>(n);

  // First slice that ends after `a` (slices are sorted and contiguous, validated at Open).
  auto first =
      std::upper_bound(t->slices().begin(), t->slices().end(), a,
                       [](uint64_t x, const ShardSlice& s) { return x < s.global_offset() + s.numel(); });
  std::unique_ptr<char[]> scratch;
  uint64_t scratch_bytes = 0;
  for (auto it = first; it != t->slices().end() && it->global_offset() < b; ++it) {
    const ShardSlice& s = *it;
    const uint64_t s0 = s.global_offset(), s1 = s0 + s.numel();
    const uint64_t lo = std::max(a, s0), hi = std::min(b, s1);
    char* dst = base + (lo - a) * element;
    if (!verify_crc || (lo == s0 && hi == s1)) {
      // Without verification only the overlap is read; a slice wholly inside the request goes straight
      // into the destination either way.
      if (absl::Status st = ReadSliceBytes(*t, s, (lo - s0) * element, (hi - lo) * element, dst,
                                           verify_crc && lo == s0 && hi == s1);
          !st.ok()) {
        return st;
      }
      continue;
    }
    // The CRC covers the whole slice, so a partly needed slice is read whole into scratch memory (after the
    // blob's size check: then s.bytes() is bounded by a real file).
    if (absl::StatusOr<int> fd = BlobFd(s.file()); !fd.ok()) return WithTensor(t->name(), fd.status());
    if (scratch_bytes < s.bytes()) {
      scratch.reset(new char[s.bytes()]);
      scratch_bytes = s.bytes();
    }
    if (absl::Status st = ReadSliceBytes(*t, s, 0, s.bytes(), scratch.get(), /*verify=*/true); !st.ok())
      return st;
    std::memcpy(dst, scratch.get() + (lo - s0) * element, (hi - lo) * element);
  }
  if (!direct) out.copy_(staging.view(out.sizes()));
  return absl::OkStatus();
}

absl::Status CheckpointReader::VerifySlice(const TensorEntry& tensor, const ShardSlice& slice) {
  // Size-check the blob before allocating: a damaged manifest may claim any byte count.
  if (absl::StatusOr<int> fd = BlobFd(slice.file()); !fd.ok()) return WithTensor(tensor.name(), fd.status());
  std::unique_ptr<char[]> buffer(new char[std::max<uint64_t>(slice.bytes(), 1)]);
  return ReadSliceBytes(tensor, slice, 0, slice.bytes(), buffer.get(), /*verify=*/true);
}

}  // namespace nats::checkpoint
