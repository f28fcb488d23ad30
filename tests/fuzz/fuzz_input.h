// tests/fuzz/fuzz_input.h
//
// Helpers shared by the libFuzzer targets of tests/fuzz/: a cursor over the fuzzer's bytes (every Consume
// call succeeds; past the end it yields zeros / empty strings, so a target never has to bail out early),
// a per-process scratch directory for parsers that read paths, and FUZZ_CHECK for the contracts a target
// asserts beyond "does not crash" (a failed check aborts, which libFuzzer reports as a crash).
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#define FUZZ_CHECK(cond)                                                                   \
  do {                                                                                     \
    if (!(cond)) {                                                                         \
      std::fprintf(stderr, "FUZZ_CHECK failed at %s:%d: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                        \
    }                                                                                      \
  } while (0)

namespace nats::fuzz {

class FuzzInput {
 public:
  FuzzInput(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  size_t remaining() const { return size_ - pos_; }

  uint8_t Byte() { return pos_ < size_ ? data_[pos_++] : 0; }

  uint32_t U32() {
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) v |= static_cast<uint32_t>(Byte()) << (8 * k);
    return v;
  }

  uint64_t U64() { return U32() | (static_cast<uint64_t>(U32()) << 32); }

  // Up to n bytes (fewer at the end of the input).
  std::string_view Bytes(size_t n) {
    n = std::min(n, remaining());
    std::string_view out(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n;
    return out;
  }

  // A length-prefixed piece (u32 little-endian length, capped by what is left).
  std::string_view Piece() { return Bytes(U32()); }

  std::string_view Rest() { return Bytes(remaining()); }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// A fresh directory per process (libFuzzer forks workers with -jobs/-workers; each gets its own).
inline const std::string& ScratchDir() {
  static const std::string* dir = [] {
    const char* tmp = std::getenv("TMPDIR");
    auto* d = new std::string(std::string(tmp != nullptr && *tmp != 0 ? tmp : "/tmp") + "/nats_fuzz_" +
                              std::to_string(::getpid()));
    std::filesystem::create_directories(*d);
    return d;
  }();
  return *dir;
}

inline void WriteFileOrDie(const std::string& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) {
    std::fprintf(stderr, "fuzz: cannot write %s\n", path.c_str());
    std::abort();
  }
}

// The download cache (the GPT-2 ranks file): $NATS_CACHE, else <source>/.cache.
inline std::string DataDir() {
  if (const char* d = std::getenv("NATS_CACHE"); d != nullptr && *d != 0) return d;
  return std::string(NATS_SOURCE_DIR) + "/.cache";
}

}  // namespace nats::fuzz
