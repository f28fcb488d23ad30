// data/sha256.h
//
// SHA-256 (FIPS 180-4), used to pin downloaded vocabulary files to the exact bytes we tested with.
// A small self-contained implementation: throughput (~200 MB/s) is ample for files of a few MB,
// and it keeps data/ free of a crypto dependency. Digests are lowercase hex, as sha256sum prints.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace nats::data {

// Lowercase hex SHA-256 digest (64 characters) of `bytes`.
std::string Sha256Hex(std::string_view bytes);

// Lowercase hex SHA-256 digest of the whole file at `path`; NotFoundError if it cannot be opened,
// DataLossError on a read error.
absl::StatusOr<std::string> Sha256HexOfFile(const std::string& path);

}  // namespace nats::data
