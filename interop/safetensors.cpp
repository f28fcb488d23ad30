// interop/safetensors.cpp: header parsing and validation (the checks of safetensors/src/tensor.rs), the
// memory mapping, sharded checkpoints and the durable writers.
#include "interop/safetensors.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "checkpoints/durable_file.h"

// The format is little-endian; the header length and the tensor bytes are used as they lie in memory.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors I/O assumes a little-endian host");

namespace nats::interop {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// safetensors' MAX_HEADER_SIZE: a larger N is a corrupt or hostile file, not a big model.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
constexpr char kMetadataKey[] = "__metadata__";
constexpr char kIndexName[] = "model.safetensors.index.json";
constexpr char kSingleName[] = "model.safetensors";

struct DTypeInfo {
  const char* name;
  int bits;
  c10::ScalarType type;  // Undefined: valid in the format, not read into a tensor here
};

// Every dtype of safetensors' Dtype enum (tensor.rs); sub-byte types are sized in bits.
constexpr DTypeInfo kDTypes[] = {
    {"BOOL", 8, c10::ScalarType::Bool},
    {"U8", 8, c10::ScalarType::Byte},
    {"I8", 8, c10::ScalarType::Char},
    {"I16", 16, c10::ScalarType::Short},
    {"I32", 32, c10::ScalarType::Int},
    {"I64", 64, c10::ScalarType::Long},
    {"F16", 16, c10::ScalarType::Half},
    {"BF16", 16, c10::ScalarType::BFloat16},
    {"F32", 32, c10::ScalarType::Float},
    {"F64", 64, c10::ScalarType::Double},
    {"U16", 16, c10::ScalarType::Undefined},
    {"U32", 32, c10::ScalarType::Undefined},
    {"U64", 64, c10::ScalarType::Undefined},
    {"C64", 64, c10::ScalarType::Undefined},
    {"F8_E5M2", 8, c10::ScalarType::Undefined},
    {"F8_E4M3", 8, c10::ScalarType::Undefined},
    {"F8_E8M0", 8, c10::ScalarType::Undefined},
    {"F8_E4M3FNUZ", 8, c10::ScalarType::Undefined},
    {"F8_E5M2FNUZ", 8, c10::ScalarType::Undefined},
    {"F4", 4, c10::ScalarType::Undefined},
    {"F6_E2M3", 6, c10::ScalarType::Undefined},
    {"F6_E3M2", 6, c10::ScalarType::Undefined},
};

const DTypeInfo* FindDType(const std::string& name) {
  for (const DTypeInfo& info : kDTypes) {
    if (name == info.name) return &info;
  }
  return nullptr;
}

const DTypeInfo* FindDType(c10::ScalarType type) {
  for (const DTypeInfo& info : kDTypes) {
    if (info.type != c10::ScalarType::Undefined && info.type == type) return &info;
  }
  return nullptr;
}

std::string KnownDTypeNames() {
  std::vector<std::string> names;
  for (const DTypeInfo& info : kDTypes) names.push_back(info.name);
  return absl::StrJoin(names, ", ");
}

// nlohmann's parser keeps the last of duplicate keys without a word; the callback sees every key, so a stack
// of key sets (one per open object) catches duplicates at any depth. The first one found is reported.
absl::StatusOr<json> ParseJsonRejectingDuplicates(const char* begin, const char* end,
                                                  const std::string& what) {
  std::vector<std::set<std::string>> open_objects;
  std::string duplicate;
  json::parser_callback_t callback = [&](int /*depth*/, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
        open_objects.emplace_back();
        break;
      case json::parse_event_t::object_end:
        if (!open_objects.empty()) open_objects.pop_back();
        break;
      case json::parse_event_t::key:
        if (!open_objects.empty() && !open_objects.back().insert(parsed.get<std::string>()).second &&
            duplicate.empty()) {
          duplicate = parsed.get<std::string>();
        }
        break;
      default:
        break;
    }
    return true;
  };
  json parsed;
  try {
    parsed = json::parse(begin, end, callback);
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(what, " is not valid UTF-8 JSON: ", e.what()));
  }
  if (!duplicate.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(what, " has the duplicate key \"", duplicate,
                                                   "\" (the format forbids duplicates; a JSON parser would "
                                                   "silently keep only one of them)"));
  }
  return parsed;
}

// A JSON integer as uint64 (nlohmann stores non-negative integers as unsigned, negative ones as signed, and
// anything else, including integers beyond 64 bits, as float).
bool AsUint64(const json& value, uint64_t* out) {
  if (value.is_number_unsigned()) {
    *out = value.get<uint64_t>();
    return true;
  }
  if (value.is_number_integer() && value.get<int64_t>() >= 0) {
    *out = static_cast<uint64_t>(value.get<int64_t>());
    return true;
  }
  return false;
}

absl::StatusOr<SafetensorsEntry> ParseEntry(const std::string& path, const std::string& name,
                                            const json& value, uint64_t* bytes) {
  const std::string where = absl::StrCat(path, ": tensor \"", name, "\"");
  if (!value.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where,
                     ": the header entry must be an object {\"dtype\", \"shape\", \"data_offsets\"}, "
                     "not ",
                     value.type_name()));
  }
  SafetensorsEntry entry;
  entry.name = name;
  const auto dtype = value.find("dtype");
  if (dtype == value.end()) return absl::InvalidArgumentError(absl::StrCat(where, ": missing \"dtype\""));
  if (!dtype->is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": \"dtype\" must be a string, not ", dtype->type_name()));
  }
  entry.dtype = dtype->get<std::string>();
  const DTypeInfo* info = FindDType(entry.dtype);
  if (info == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": unknown dtype \"", entry.dtype, "\" (known: ", KnownDTypeNames(), ")"));
  }

  const auto shape = value.find("shape");
  if (shape == value.end()) return absl::InvalidArgumentError(absl::StrCat(where, ": missing \"shape\""));
  if (!shape->is_array()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": \"shape\" must be an array of integers, not ", shape->type_name()));
  }
  uint64_t numel = 1;
  bool overflow = false;
  for (size_t i = 0; i < shape->size(); ++i) {
    const json& dim = (*shape)[i];
    if (dim.is_number_integer() && !dim.is_number_unsigned() && dim.get<int64_t>() < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": shape ", shape->dump(), " has the negative dimension ", dim.get<int64_t>()));
    }
    uint64_t d = 0;
    if (!AsUint64(dim, &d)) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": \"shape\" must be an array of integers, but element ", i, " is ", dim.dump()));
    }
    if (d > static_cast<uint64_t>(INT64_MAX)) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": shape ", shape->dump(), " has the dimension ", d, ", beyond int64"));
    }
    entry.shape.push_back(static_cast<int64_t>(d));
    overflow = overflow || __builtin_mul_overflow(numel, d, &numel);
  }

  const auto offsets = value.find("data_offsets");
  if (offsets == value.end()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": missing \"data_offsets\""));
  }
  if (!offsets->is_array() || offsets->size() != 2 || !AsUint64((*offsets)[0], &entry.begin) ||
      !AsUint64((*offsets)[1], &entry.end)) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": \"data_offsets\" must be [begin, end], two non-negative integers, not ", offsets->dump()));
  }
  if (entry.begin > entry.end) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": data_offsets [", entry.begin, ", ", entry.end, "] have begin > end"));
  }

  uint64_t bits = 0;
  overflow = overflow || __builtin_mul_overflow(numel, static_cast<uint64_t>(info->bits), &bits);
  if (overflow) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": shape ", shape->dump(), " of ", entry.dtype,
                                                   " overflows 64 bits when counting its bytes"));
  }
  if (bits % 8 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": ", numel, " elements of ", entry.dtype,
                                                   " do not end on a byte boundary (", bits, " bits)"));
  }
  if (entry.end - entry.begin != bits / 8) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": data_offsets [", entry.begin, ", ", entry.end, "] hold ", entry.end - entry.begin,
        " bytes, but shape ", shape->dump(), " of ", entry.dtype, " needs ", bits / 8, " bytes"));
  }
  *bytes = bits / 8;
  return entry;
}

absl::StatusOr<std::map<std::string, std::string>> ParseMetadata(const std::string& path, const json& value) {
  if (!value.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": \"", kMetadataKey, "\" must be an object of strings, not ", value.type_name()));
  }
  std::map<std::string, std::string> metadata;
  for (const auto& [key, item] : value.items()) {
    if (!item.is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": \"", kMetadataKey, "\" must map strings to strings, but \"", key, "\" is ", item.dump()));
    }
    metadata[key] = item.get<std::string>();
  }
  return metadata;
}

absl::StatusOr<c10::ScalarType> ReadableType(const std::string& where, const SafetensorsEntry& entry) {
  const DTypeInfo* info = FindDType(entry.dtype);
  TORCH_INTERNAL_ASSERT(info != nullptr, "Open validated the dtype of ", entry.name);
  if (info->type == c10::ScalarType::Undefined) {
    return absl::UnimplementedError(absl::StrCat(where, ": tensor \"", entry.name, "\" has dtype ",
                                                 entry.dtype,
                                                 ", which is valid safetensors but not read here (readable: "
                                                 "F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL)"));
  }
  return info->type;
}

// A file descriptor that closes itself; the writers' error paths are many.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

absl::Status WriteAll(int fd, const void* data, size_t size, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    // Linux writes at most ~2 GiB per call; larger tensors take several.
    const ssize_t n = ::write(fd, p, std::min<size_t>(size, size_t{1} << 30));
    if (n < 0) {
      if (errno == EINTR) continue;
      return checkpoint::ErrnoStatus("cannot write", path, errno);
    }
    p += n;
    size -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

std::string ParentDirectory(const std::string& path) {
  const std::string parent = fs::path(path).parent_path().string();
  return parent.empty() ? "." : parent;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// SafetensorsFile

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) ::munmap(const_cast<uint8_t*>(map_), map_size_);
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  {
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0) return checkpoint::ErrnoStatus("cannot open", path, errno);
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) return checkpoint::ErrnoStatus("cannot stat", path, errno);
    if (!S_ISREG(st.st_mode)) return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
    file->map_size_ = static_cast<size_t>(st.st_size);
    if (file->map_size_ < 8) {
      return absl::DataLossError(
          absl::StrCat(path, ": ", file->map_size_,
                       " bytes, shorter than the 8-byte header length of a safetensors file "
                       "(truncated or not safetensors)"));
    }
    void* map = ::mmap(nullptr, file->map_size_, PROT_READ, MAP_PRIVATE, fd.get(), 0);
    if (map == MAP_FAILED) return checkpoint::ErrnoStatus("cannot mmap", path, errno);
    file->map_ = static_cast<const uint8_t*>(map);
  }  // the mapping keeps the file's pages; the descriptor is no longer needed

  const uint64_t file_size = file->map_size_;
  uint64_t header_bytes = 0;
  std::memcpy(&header_bytes, file->map_, 8);
  if (header_bytes > kMaxHeaderBytes) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": header length ", header_bytes,
                                                   " exceeds the format's limit of ", kMaxHeaderBytes,
                                                   " bytes (corrupt file or not safetensors)"));
  }
  if (8 + header_bytes > file_size) {
    return absl::DataLossError(absl::StrCat(path, ": the header length ", header_bytes,
                                            " needs at least 8 + ", header_bytes, " = ", 8 + header_bytes,
                                            " bytes, but the file has ", file_size, " (truncated?)"));
  }
  file->data_start_ = 8 + header_bytes;
  const char* header = reinterpret_cast<const char*>(file->map_ + 8);
  if (header_bytes == 0 || header[0] != '{') {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": the header must be a JSON object starting with '{' (found ",
        header_bytes == 0 ? std::string("nothing")
                          : absl::StrFormat("byte 0x%02x", static_cast<unsigned char>(header[0])),
        ")"));
  }
  absl::StatusOr<json> parsed =
      ParseJsonRejectingDuplicates(header, header + header_bytes, absl::StrCat(path, ": the header"));
  if (!parsed.ok()) return parsed.status();
  if (!parsed->is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": the header must be a JSON object, not ", parsed->type_name()));
  }

  const uint64_t data_bytes = file_size - file->data_start_;
  for (const auto& [name, value] : parsed->items()) {
    if (name == kMetadataKey) {
      absl::StatusOr<std::map<std::string, std::string>> metadata = ParseMetadata(path, value);
      if (!metadata.ok()) return metadata.status();
      file->metadata_ = *std::move(metadata);
      continue;
    }
    uint64_t bytes = 0;
    absl::StatusOr<SafetensorsEntry> entry = ParseEntry(path, name, value, &bytes);
    if (!entry.ok()) return entry.status();
    if (entry->end > data_bytes) {
      return absl::DataLossError(
          absl::StrCat(path, ": tensor \"", name, "\": data_offsets [", entry->begin, ", ", entry->end,
                       "] run past the end of the data buffer (", data_bytes,
                       " bytes); the file should be at least ", file->data_start_, " + ", entry->end, " = ",
                       file->data_start_ + entry->end, " bytes but has ", file_size, " (truncated?)"));
    }
    file->entries_.push_back(*std::move(entry));
  }

  // The data buffer must be exactly the tensors' bytes back to back, as the Rust reader demands.
  std::vector<const SafetensorsEntry*> by_offset;
  for (const SafetensorsEntry& e : file->entries_) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(), [](const SafetensorsEntry* a, const SafetensorsEntry* b) {
    return std::tie(a->begin, a->end, a->name) < std::tie(b->begin, b->end, b->name);
  });
  uint64_t expected = 0;
  const SafetensorsEntry* previous = nullptr;
  for (const SafetensorsEntry* e : by_offset) {
    if (e->begin != expected) {
      if (previous == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": the first tensor by offset, \"", e->name,
                                                       "\", starts at byte ", e->begin,
                                                       " of the data buffer, not 0 (a hole before it)"));
      }
      if (e->begin > expected) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": a hole of ", e->begin - expected,
                         " bytes in the data buffer between tensor \"", previous->name, "\" (ends at ",
                         expected, ") and tensor \"", e->name, "\" (starts at ", e->begin, ")"));
      }
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensors \"", previous->name, "\" [", previous->begin, ", ", previous->end,
                       ") and \"", e->name, "\" [", e->begin, ", ", e->end, ") overlap in the data buffer"));
    }
    expected = e->end;
    previous = e;
  }
  if (expected != data_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": ", data_bytes - expected, " bytes after the last tensor's data (the tensors end at byte ",
        file->data_start_ + expected, ", the file has ", file_size, ")"));
  }
  std::sort(file->entries_.begin(), file->entries_.end(),
            [](const SafetensorsEntry& a, const SafetensorsEntry& b) { return a.name < b.name; });
  return file;
}

const SafetensorsEntry* SafetensorsFile::Find(const std::string& name) const {
  auto it = std::lower_bound(entries_.begin(), entries_.end(), name,
                             [](const SafetensorsEntry& e, const std::string& n) { return e.name < n; });
  return it != entries_.end() && it->name == name ? &*it : nullptr;
}

absl::StatusOr<at::Tensor> SafetensorsFile::Get(const std::string& name) const {
  const SafetensorsEntry* entry = Find(name);
  if (entry == nullptr) {
    return absl::NotFoundError(
        absl::StrCat(path_, ": no tensor \"", name, "\" (the file holds ", entries_.size(), " tensors)"));
  }
  absl::StatusOr<c10::ScalarType> type = ReadableType(path_, *entry);
  if (!type.ok()) return type.status();
  at::Tensor out = at::empty(entry->shape, at::TensorOptions().dtype(*type).device(at::kCPU));
  TORCH_INTERNAL_ASSERT(static_cast<uint64_t>(out.nbytes()) == entry->end - entry->begin,
                        "Open checked the byte count of ", name);
  if (out.nbytes() > 0) std::memcpy(out.data_ptr(), map_ + data_start_ + entry->begin, out.nbytes());
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// SafetensorsCheckpoint

absl::StatusOr<std::unique_ptr<SafetensorsCheckpoint>> SafetensorsCheckpoint::Open(const std::string& path) {
  std::error_code ec;
  std::string file = path;
  if (fs::is_directory(path, ec)) {
    const fs::path dir(path);
    if (fs::exists(dir / kIndexName, ec)) {
      file = (dir / kIndexName).string();
    } else if (fs::exists(dir / kSingleName, ec)) {
      file = (dir / kSingleName).string();
    } else {
      return absl::NotFoundError(
          absl::StrCat(path, ": a directory with neither ", kIndexName, " nor ", kSingleName));
    }
  }
  std::unique_ptr<SafetensorsCheckpoint> checkpoint(new SafetensorsCheckpoint());
  checkpoint->path_ = file;

  if (!absl::EndsWith(file, ".json")) {
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> single = SafetensorsFile::Open(file);
    if (!single.ok()) return single.status();
    for (size_t i = 0; i < (*single)->entries().size(); ++i)
      checkpoint->shard_of_[(*single)->entries()[i].name] = 0;
    checkpoint->shards_.push_back(*std::move(single));
    return checkpoint;
  }

  absl::StatusOr<std::string> text = checkpoint::ReadFileToString(file);
  if (!text.ok()) return text.status();
  absl::StatusOr<json> index = ParseJsonRejectingDuplicates(text->data(), text->data() + text->size(),
                                                            absl::StrCat(file, ": the index"));
  if (!index.ok()) return index.status();
  if (!index->is_object() || !index->contains("weight_map") || !(*index)["weight_map"].is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(file, ": the index must be an object with \"weight_map\": {tensor: shard file}"));
  }
  std::map<std::string, std::string> weight_map;  // tensor -> shard file name
  std::set<std::string> shard_names;
  for (const auto& [tensor, shard] : (*index)["weight_map"].items()) {
    if (!shard.is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(file, ": weight_map[\"", tensor, "\"] must be a shard file name, not ", shard.dump()));
    }
    const std::string name = shard.get<std::string>();
    if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..") {
      return absl::InvalidArgumentError(absl::StrCat(file, ": weight_map[\"", tensor, "\"] = \"", name,
                                                     "\" is not a file name in the index's folder"));
    }
    weight_map[tensor] = name;
    shard_names.insert(name);
  }

  const fs::path dir = fs::path(file).parent_path();
  std::map<std::string, size_t> shard_index;
  for (const std::string& name : shard_names) {
    const std::string shard_path = (dir / name).string();
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> shard = SafetensorsFile::Open(shard_path);
    if (!shard.ok()) {
      return absl::Status(shard.status().code(),
                          absl::StrCat(file, " lists shard ", name, ": ", shard.status().message()));
    }
    shard_index[name] = checkpoint->shards_.size();
    checkpoint->shards_.push_back(*std::move(shard));
  }
  for (size_t s = 0; s < checkpoint->shards_.size(); ++s) {
    const SafetensorsFile& shard = *checkpoint->shards_[s];
    const std::string shard_name = fs::path(shard.path()).filename().string();
    for (const SafetensorsEntry& entry : shard.entries()) {
      auto listed = weight_map.find(entry.name);
      if (listed == weight_map.end()) {
        return absl::InvalidArgumentError(absl::StrCat(shard.path(), ": tensor \"", entry.name,
                                                       "\" is not listed in the weight_map of ", file));
      }
      auto [it, inserted] = checkpoint->shard_of_.emplace(entry.name, s);
      if (!inserted) {
        return absl::InvalidArgumentError(absl::StrCat("tensor \"", entry.name, "\" is in two shards, ",
                                                       checkpoint->shards_[it->second]->path(), " and ",
                                                       shard.path(), " (", file, ")"));
      }
      if (listed->second != shard_name) {
        return absl::InvalidArgumentError(absl::StrCat(shard.path(), ": tensor \"", entry.name,
                                                       "\" is here, but the weight_map of ", file,
                                                       " puts it in ", listed->second));
      }
    }
  }
  for (const auto& [tensor, shard] : weight_map) {
    if (checkpoint->shard_of_.count(tensor) == 0) {
      return absl::InvalidArgumentError(absl::StrCat(file, ": weight_map puts tensor \"", tensor, "\" in ",
                                                     shard, ", but ", (dir / shard).string(),
                                                     " has no such tensor"));
    }
  }
  return checkpoint;
}

std::vector<std::string> SafetensorsCheckpoint::names() const {
  std::vector<std::string> names;
  names.reserve(shard_of_.size());
  for (const auto& [name, shard] : shard_of_) names.push_back(name);
  return names;
}

const SafetensorsEntry* SafetensorsCheckpoint::Find(const std::string& name) const {
  auto it = shard_of_.find(name);
  return it == shard_of_.end() ? nullptr : shards_[it->second]->Find(name);
}

absl::StatusOr<at::Tensor> SafetensorsCheckpoint::Get(const std::string& name) const {
  auto it = shard_of_.find(name);
  if (it == shard_of_.end()) {
    return absl::NotFoundError(absl::StrCat(path_, ": no tensor \"", name, "\" (the checkpoint holds ",
                                            shard_of_.size(), " tensors)"));
  }
  return shards_[it->second]->Get(name);
}

std::map<std::string, std::string> SafetensorsCheckpoint::metadata() const {
  return shards_.empty() ? std::map<std::string, std::string>{} : shards_.front()->metadata();
}

// ---------------------------------------------------------------------------------------------------------------
// Writers

absl::Status WriteSafetensors(const std::string& path,
                              const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  // ordered_json keeps "__metadata__" first and the entries in the caller's order.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header[kMetadataKey] = metadata;
  std::vector<at::Tensor> data;
  std::set<std::string> seen;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    if (name.empty() || name == kMetadataKey) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": the tensor name \"", name, "\" is reserved or empty"));
    }
    if (!seen.insert(name).second) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": the tensor name \"", name, "\" appears twice"));
    }
    if (!tensor.defined()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": tensor \"", name, "\" is undefined"));
    }
    const DTypeInfo* info = FindDType(tensor.scalar_type());
    if (info == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": tensor \"", name, "\" has dtype ", c10::toString(tensor.scalar_type()),
          ", which is not written here (writable: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL)"));
    }
    at::Tensor cpu = tensor.to(at::kCPU).contiguous();
    const uint64_t bytes = static_cast<uint64_t>(cpu.nbytes());
    header[name] = {
        {"dtype", info->name}, {"shape", cpu.sizes().vec()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    data.push_back(std::move(cpu));
  }
  std::string text = header.dump();
  text.append((8 - (8 + text.size()) % 8) % 8,
              ' ');  // the data starts 8-byte aligned, as the Rust writer does
  const uint64_t header_bytes = text.size();

  const std::string tmp = path + ".tmp";
  Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (fd.get() < 0) return checkpoint::ErrnoStatus("cannot create", tmp, errno);
  absl::Status status = WriteAll(fd.get(), &header_bytes, 8, tmp);
  if (status.ok()) status = WriteAll(fd.get(), text.data(), text.size(), tmp);
  for (size_t i = 0; i < data.size() && status.ok(); ++i) {
    status = WriteAll(fd.get(), data[i].data_ptr(), data[i].nbytes(), tmp);
  }
  if (status.ok() && ::fsync(fd.get()) != 0) status = checkpoint::ErrnoStatus("cannot fsync", tmp, errno);
  if (::close(fd.release()) != 0 && status.ok()) status = checkpoint::ErrnoStatus("cannot close", tmp, errno);
  if (status.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) {
    status = checkpoint::ErrnoStatus(absl::StrCat("cannot rename ", tmp, " to"), path, errno);
  }
  if (!status.ok()) {
    ::unlink(tmp.c_str());
    return status;
  }
  return checkpoint::FsyncDirectory(ParentDirectory(path));
}

absl::Status WriteSafetensorsCheckpoint(const std::string& dir,
                                        const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                                        const std::map<std::string, std::string>& metadata,
                                        uint64_t max_shard_bytes) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create directory ", dir, ": ", ec.message()));
  const fs::path root(dir);

  uint64_t total = 0;
  std::vector<std::vector<std::pair<std::string, at::Tensor>>> shards(1);
  uint64_t in_shard = 0;
  for (const auto& item : tensors) {
    const uint64_t bytes = item.second.defined() ? static_cast<uint64_t>(item.second.nbytes()) : 0;
    if (!shards.back().empty() && in_shard + bytes > max_shard_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().push_back(item);
    in_shard += bytes;
    total += bytes;
  }

  std::set<std::string> written;
  if (shards.size() == 1) {
    const std::string single = (root / kSingleName).string();
    if (absl::Status s = WriteSafetensors(single, tensors, metadata); !s.ok()) return s;
    written.insert(kSingleName);
  } else {
    std::set<std::string> names;
    for (const auto& item : tensors) {
      if (!names.insert(item.first).second) {
        return absl::InvalidArgumentError(
            absl::StrCat(dir, ": the tensor name \"", item.first, "\" appears twice"));
      }
    }
    nlohmann::json weight_map = nlohmann::json::object();
    for (size_t s = 0; s < shards.size(); ++s) {
      const std::string name = absl::StrFormat("model-%05d-of-%05d.safetensors", s + 1, shards.size());
      if (absl::Status st = WriteSafetensors((root / name).string(), shards[s], metadata); !st.ok())
        return st;
      for (const auto& item : shards[s]) weight_map[item.first] = name;
      written.insert(name);
    }
    const nlohmann::json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
    if (absl::Status s = checkpoint::WriteFileDurably((root / kIndexName).string(), index.dump(2) + "\n",
                                                      "safetensors_index");
        !s.ok()) {
      return s;
    }
    written.insert(kIndexName);
  }

  // Stale files of an earlier write: removed only now, when the new layout is complete on disk.
  for (const fs::directory_entry& entry : fs::directory_iterator(root, ec)) {
    const std::string name = entry.path().filename().string();
    const bool ours = name == kSingleName || name == kIndexName ||
                      (absl::StartsWith(name, "model-") && absl::EndsWith(name, ".safetensors") &&
                       name.find("-of-") != std::string::npos);
    if (ours && written.count(name) == 0) fs::remove(entry.path(), ec);
  }
  return checkpoint::FsyncDirectory(dir);
}

}  // namespace nats::interop
