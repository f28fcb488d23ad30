// data/mix64.h
//
// SplitMix64's output function: a bijection of 64-bit words with strong avalanche. Used wherever a value must
// be a pure function of some counters (the loader's shuffle, the scorer's counter-based Gumbel noise). Not
// cryptography.
#pragma once

#include <cstdint>

namespace nats::data {

inline uint64_t Mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

}  // namespace nats::data
