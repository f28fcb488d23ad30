// data/mix64.h
//
// SplitMix64's output function: a bijection of 64-bit words with strong avalanche. Used wherever a value must
// be a pure function of some counters (the loader's shuffle, the scorer's counter-based Gumbel noise). Not
// cryptography.
#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>

namespace nats::data {

inline uint64_t Mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// A stable 64-bit hash of a byte string (the same on every platform and run, unlike std::hash / absl::Hash):
// each little-endian 8-byte word, then the tail and the length, folded through Mix64. ~2 GB/s. Not
// cryptography.
inline uint64_t Hash64(std::string_view bytes, uint64_t seed = 0) {
  uint64_t h = Mix64(seed ^ 0x6A09E667F3BCC908ull);
  size_t i = 0;
  for (; i + 8 <= bytes.size(); i += 8) {
    uint64_t word;
    std::memcpy(&word, bytes.data() + i, 8);
    h = Mix64(h ^ word);
  }
  uint64_t tail = 0;
  if (i < bytes.size()) std::memcpy(&tail, bytes.data() + i, bytes.size() - i);
  return Mix64(Mix64(h ^ tail) ^ static_cast<uint64_t>(bytes.size()));
}

}  // namespace nats::data
