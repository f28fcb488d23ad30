// data/fingerprint.h
//
// Fingerprint64: the one fingerprint of texts that must hash equal wherever they are equal: the config hash
// that run files record (summary.json, results.csv; a sweep reuses a finished cell only when it matches) and
// that ranks compare at start-up, and the parameter layout ranks compare. Recorded values pin the function.
//
// It is 64-bit FNV-1a (prime 1099511628211 = 0x100000001b3) but NOT with FNV's offset basis
// 14695981039346656037 (0xcbf29ce484222325): the basis here is 1469598103934665603 (0x14650fb0739d0383), the
// standard one with its last digit lost when the hash was first written. Changing it to the standard basis
// would change every recorded config hash, so it stays; tests/data/fingerprint_test.cpp pins the values.
// Not cryptography; Hash64 (data/mix64.h) is faster where no recorded value depends on the function.
#pragma once

#include <cstdint>
#include <string_view>

namespace nats::data {

uint64_t Fingerprint64(std::string_view bytes);

}  // namespace nats::data
