// Fingerprint64 (data/fingerprint.h) against values computed by an independent implementation (Python:
// h = 1469598103934665603; for b in data: h = ((h ^ b) * 1099511628211) % 2**64). These values are recorded
// in run files (config_hash); a change here means every recorded config hash changes.
#include "data/fingerprint.h"

#include <string>

#include "gtest/gtest.h"

namespace nats::data {
namespace {

// Deliberately not FNV-1a 64's published vectors ("" -> 0xcbf29ce484222325, "a" -> 0xaf63dc4c8601ec8c): the
// offset basis differs (see the header).
TEST(Fingerprint64, PinnedValues) {
  EXPECT_EQ(Fingerprint64(""), 0x14650fb0739d0383ull);  // the offset basis itself
  EXPECT_EQ(Fingerprint64("a"), 0x44bd8ad473cd9906ull);
  EXPECT_EQ(Fingerprint64("foobar"), 0x88fad7c0a8ff07f2ull);
  EXPECT_EQ(Fingerprint64("model { d: 64 }"), 0x070d4c696b614696ull);
}

TEST(Fingerprint64, EveryByteCounts) {
  const std::string with_nul("a\0b", 3);
  EXPECT_NE(Fingerprint64(with_nul), Fingerprint64("ab"));
  EXPECT_NE(Fingerprint64("ab"), Fingerprint64("ba"));
  EXPECT_NE(Fingerprint64("\xff"), Fingerprint64("\x7f"));  // bytes are unsigned
}

}  // namespace
}  // namespace nats::data
