// data/sha256.h
//
// SHA-256 (FIPS 180-4), used to pin downloaded vocabulary files to the exact bytes we tested with.
// OpenSSL's libcrypto computes it (EVP interface): a vetted implementation rather than one of our own.
// Digests are lowercase hex, as sha256sum prints.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace nats::data {

// Lowercase hex SHA-256 digest (64 characters) of `bytes`.
std::string Sha256Hex(std::string_view bytes);

// Lowercase hex SHA-256 digest of the whole file at `path`, read in chunks (any size); NotFoundError if it
// cannot be opened, DataLossError on a read error.
absl::StatusOr<std::string> Sha256HexOfFile(const std::string& path);

}  // namespace nats::data
