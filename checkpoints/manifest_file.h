// checkpoints/manifest_file.h
//
// The bytes of manifest.pb: a 24-byte frame and the serialized Manifest, so that a damaged manifest is
// detected by its own checksum (as every blob slice is) instead of parsing into wrong but valid values.
//
//   bytes 0..7    magic "NATSMNF1"
//   bytes 8..15   payload length (uint64, little endian)
//   bytes 16..19  CRC-32C of the payload (uint32, little endian; checkpoints/crc32c.h)
//   bytes 20..23  zero (reserved)
//   bytes 24..    the serialized Manifest
//
// Manifests written before the frame existed (a bare serialized Manifest; it always starts with the
// bytes 0x08 0x01, format_version = 1) are still read, without a checksum to check. No protobuf message
// can start with 'N' (field 9, wire type 6 does not exist), so the two forms cannot be confused. The
// frame is a property of the file, not of the manifest's meaning: Manifest.format_version stays 1.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "checkpoints/checkpoint.pb.h"

namespace nats::checkpoint {

inline constexpr size_t kManifestFrameBytes = 24;

// The framed file content. InternalError when the message cannot be serialized.
absl::StatusOr<std::string> EncodeManifestFile(const Manifest& manifest);

// Parses the content of `path` (named in errors, with the fix). DataLossError for a bad magic, a wrong
// length, a checksum mismatch or an unparsable payload. The format version is not checked here.
absl::StatusOr<Manifest> DecodeManifestFile(absl::string_view bytes, const std::string& path);

}  // namespace nats::checkpoint
