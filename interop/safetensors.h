// interop/safetensors.h
//
// The safetensors format (huggingface/safetensors; wave2-notes.md section E): an 8-byte little-endian header
// length N, N bytes of JSON {"name": {"dtype", "shape", "data_offsets": [begin, end)}, "__metadata__": {str:
// str}}, then the data buffer, row-major and little-endian. Read memory-mapped and validated as the Rust
// reader does (every check failing with one message naming the file, the tensor or field and what is wrong);
// written durably (tmp + fsync + rename), single file or sharded with model.safetensors.index.json (the
// transformers convention). Little-endian hosts only (a static_assert in the .cpp says so).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace nats::interop {

// One tensor's header entry.
struct SafetensorsEntry {
  std::string name;
  std::string dtype;  // "F32", "BF16", ... as written in the file
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // [begin, end) in the data buffer (after the 8 + N header bytes)
};

// A memory-mapped, fully validated .safetensors file (the mapping lives as long as the object).
class SafetensorsFile {
 public:
  // NotFound/PermissionDenied when the file cannot be opened; DataLoss when it is shorter than its header or
  // offsets say (the message gives the expected size); InvalidArgument for a malformed header.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::vector<SafetensorsEntry>& entries() const { return entries_; }         // sorted by name
  const std::map<std::string, std::string>& metadata() const { return metadata_; }  // "__metadata__"
  const SafetensorsEntry* Find(const std::string& name) const;                      // nullptr when absent
  // An owning CPU tensor (copied out of the mapping) in the stored dtype:
  // F64/F32/F16/BF16/I64/I32/I16/I8/U8/BOOL map to the LibTorch dtype; the other valid dtypes
  // (U16/U32/U64/F8_*/F4/F6_*/C64) give Unimplemented naming the tensor and dtype. NotFound names the tensor
  // and the file.
  absl::StatusOr<at::Tensor> Get(const std::string& name) const;
  const std::string& path() const { return path_; }

 private:
  SafetensorsFile() = default;

  std::string path_;
  const uint8_t* map_ = nullptr;  // the whole file, PROT_READ/MAP_PRIVATE; nullptr for an empty mapping
  size_t map_size_ = 0;
  uint64_t data_start_ = 0;  // 8 + N
  std::vector<SafetensorsEntry> entries_;
  std::map<std::string, std::string> metadata_;
};

// A model's weights: a single file, or shards listed by model.safetensors.index.json ({"metadata":
// {"total_size": N}, "weight_map": {tensor: shard file}}). Open accepts a directory (index.json preferred,
// else model.safetensors) or a path to either file. Every tensor must be in exactly one shard and the
// weight_map must match the shards' contents (a tensor listed but missing, or present in a shard but not
// listed, is an error naming the tensor and both files). Shard names in the weight_map are file names in the
// index's folder.
class SafetensorsCheckpoint {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsCheckpoint>> Open(const std::string& path);

  std::vector<std::string> names() const;                       // sorted
  const SafetensorsEntry* Find(const std::string& name) const;  // nullptr when absent
  // As SafetensorsFile::Get; NotFound names the tensor and the checkpoint path.
  absl::StatusOr<at::Tensor> Get(const std::string& name) const;
  std::map<std::string, std::string> metadata() const;  // of the first shard (by file name)

 private:
  SafetensorsCheckpoint() = default;

  std::string path_;
  std::vector<std::unique_ptr<SafetensorsFile>> shards_;  // sorted by file name
  std::map<std::string, size_t> shard_of_;                // tensor -> index into shards_
};

// Writes tensors (any tensors of the ten mapped dtypes; moved to the CPU and made contiguous; names unique
// and non-empty and not "__metadata__", else InvalidArgument) as one file: header JSON ("__metadata__" first
// when non-empty, then the entries in the given order) padded with spaces so that 8 + N is a multiple of 8,
// data contiguous in the given order. Durable: `path`.tmp, fsync, rename, fsync of the directory.
absl::Status WriteSafetensors(const std::string& path,
                              const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

// Writes dir/model.safetensors when the tensors total <= max_shard_bytes, else
// dir/model-0000i-of-0000n.safetensors shards (filled greedily in the given order; each <= max_shard_bytes
// unless one tensor alone is larger) plus dir/model.safetensors.index.json, written last (the commit point).
// `metadata` goes into every shard. Files of the other layout left in `dir` by an earlier write (index,
// shards, single file) are removed afterwards, so that Open(dir) cannot read stale weights.
absl::Status WriteSafetensorsCheckpoint(const std::string& dir,
                                        const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                                        const std::map<std::string, std::string>& metadata,
                                        uint64_t max_shard_bytes);

}  // namespace nats::interop
