// checkpoints/checkpoint_reader.h
//
// Reads tensors out of one complete checkpoint directory, in any sharding: a request for elements
// [offset, offset + n) of a tensor is assembled from whichever blobs hold the overlapping slices, so a
// checkpoint saved by W ranks loads into any other number of ranks (resharding is a read).
//
// Open() validates the manifest as a whole (format version, dtypes, shapes, slices that cover every
// tensor exactly once, 64-byte aligned offsets inside listed blobs), so later failures can only be I/O or
// data damage. Every slice that is read is CRC-checked unless verification is switched off; a slice
// only partly needed is still read whole for that. Errors name the tensor, the blob file and the fix:
//   "tensor model/wte: rank_1.bin is truncated (1024 bytes, the manifest expects 4096); ..."
//   "tensor model/wte: CRC mismatch in rank_1.bin at byte 64 (1024 bytes); the checkpoint is damaged ..."
// Not thread safe (one reader per thread).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "checkpoints/checkpoint.pb.h"

namespace nats::checkpoint {

class CheckpointReader {
 public:
  // `step_dir` is a complete checkpoint directory (see ResolveCheckpointPath for roots).
  static absl::StatusOr<std::unique_ptr<CheckpointReader>> Open(const std::string& step_dir);
  ~CheckpointReader();
  CheckpointReader(const CheckpointReader&) = delete;
  CheckpointReader& operator=(const CheckpointReader&) = delete;

  const Manifest& manifest() const { return manifest_; }
  const std::string& dir() const { return dir_; }
  // nullptr when the checkpoint has no tensor of that name.
  const TensorEntry* Find(const std::string& name) const;

  // Checks that the stored tensor `name` exists with exactly this dtype and global shape. The message
  // names both shapes and, when given, `hint` (e.g. "the model config changed: model.d_model 128 -> 64").
  absl::Status CheckCompatible(const std::string& name, c10::ScalarType dtype, at::IntArrayRef shape,
                               const std::string& hint = "") const;

  // Fills `out` (any shape, device and layout; its dtype must be the stored one) with the flattened
  // elements [global_offset, global_offset + out.numel()) of tensor `name`.
  absl::Status Read(const std::string& name, int64_t global_offset, at::Tensor& out, bool verify_crc = true);

  // Reads one slice whole and checks its CRC (`nats inspect --verify`).
  absl::Status VerifySlice(const TensorEntry& tensor, const ShardSlice& slice);

 private:
  CheckpointReader(std::string dir, Manifest manifest);
  absl::Status ValidateManifest() const;
  // The open descriptor of blob `file` (opened, size- and header-checked on first use).
  absl::StatusOr<int> BlobFd(const std::string& file);
  // Reads slice bytes [skip, skip + bytes) into `dst`; with `verify` the whole slice must be requested.
  absl::Status ReadSliceBytes(const TensorEntry& tensor, const ShardSlice& slice, uint64_t skip,
                              uint64_t bytes, void* dst, bool verify);

  std::string dir_;
  Manifest manifest_;
  std::map<std::string, int> index_;  // tensor name -> position in manifest_.tensors
  std::map<std::string, const BlobFile*> blobs_;
  std::map<std::string, int> fds_;
};

// "[384, 128]"
std::string ShapeString(at::IntArrayRef shape);

}  // namespace nats::checkpoint
