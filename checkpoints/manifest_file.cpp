#include "checkpoints/manifest_file.h"

#include <cstdint>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "checkpoints/crc32c.h"

namespace nats::checkpoint {
namespace {

constexpr char kMagic[8] = {'N', 'A', 'T', 'S', 'M', 'N', 'F', '1'};

// The fix for every kind of damage: the manifest cannot be repaired, the step can only be skipped.
constexpr char kDamagedFix[] =
    "; the manifest is damaged (disk or copy error): resume from an older step (nats train "
    "--resume_from=<step>) "
    "or restore the directory from a copy";

void PutLittleEndian(uint64_t value, int bytes, char* out) {
  for (int i = 0; i < bytes; ++i) out[i] = static_cast<char>((value >> (8 * i)) & 0xff);
}

uint64_t GetLittleEndian(const char* in, int bytes) {
  uint64_t value = 0;
  for (int i = 0; i < bytes; ++i)
    value |= static_cast<uint64_t>(static_cast<unsigned char>(in[i])) << (8 * i);
  return value;
}

}  // namespace

absl::StatusOr<std::string> EncodeManifestFile(const Manifest& manifest) {
  std::string payload;
  if (!manifest.SerializeToString(&payload)) {
    return absl::InternalError("cannot serialize the checkpoint manifest");
  }
  std::string out(kManifestFrameBytes, '\0');
  std::memcpy(&out[0], kMagic, sizeof(kMagic));
  PutLittleEndian(payload.size(), 8, &out[8]);
  PutLittleEndian(Crc32c(0, payload.data(), payload.size()), 4, &out[16]);
  out += payload;
  return out;
}

absl::StatusOr<Manifest> DecodeManifestFile(absl::string_view bytes, const std::string& path) {
  Manifest manifest;
  const bool framed =
      bytes.size() >= sizeof(kMagic) && std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) == 0;
  if (!framed) {
    // A manifest from before the frame: format_version (field 1, varint) = 1 is always serialized first.
    const bool legacy = bytes.size() >= 2 && bytes[0] == '\x08' && bytes[1] == '\x01';
    if (!legacy) {
      return absl::DataLossError(absl::StrCat(path, ": not a checkpoint manifest (bad magic, ", bytes.size(),
                                              " bytes)", kDamagedFix));
    }
    if (!manifest.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
      return absl::DataLossError(absl::StrCat(path, ": cannot parse the checkpoint manifest", kDamagedFix));
    }
    return manifest;
  }
  if (bytes.size() < kManifestFrameBytes) {
    return absl::DataLossError(absl::StrCat(path, ": truncated manifest (", bytes.size(),
                                            " bytes, the frame alone is ", kManifestFrameBytes, ")",
                                            kDamagedFix));
  }
  const uint64_t length = GetLittleEndian(bytes.data() + 8, 8);
  const uint32_t stored_crc = static_cast<uint32_t>(GetLittleEndian(bytes.data() + 16, 4));
  const uint64_t reserved = GetLittleEndian(bytes.data() + 20, 4);
  if (length != bytes.size() - kManifestFrameBytes || reserved != 0) {
    return absl::DataLossError(absl::StrCat(
        path, ": the manifest frame announces ", length, " payload bytes but the file has ",
        bytes.size() - kManifestFrameBytes, reserved != 0 ? " (and a damaged header)" : "", kDamagedFix));
  }
  const absl::string_view payload = bytes.substr(kManifestFrameBytes);
  const uint32_t crc = Crc32c(0, payload.data(), payload.size());
  if (crc != stored_crc) {
    return absl::DataLossError(
        absl::StrFormat("%s: manifest checksum mismatch (CRC-32C stored %08x, computed %08x)%s", path,
                        stored_crc, crc, kDamagedFix));
  }
  if (!manifest.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
    return absl::DataLossError(absl::StrCat(
        path, ": the manifest's checksum is right but it does not parse (written by a broken build?)",
        kDamagedFix));
  }
  return manifest;
}

}  // namespace nats::checkpoint
