// data/utf8.h against RFC 3629 cases and against a decoding reference (decode the code point, then reject
// overlong, surrogate and out-of-range values): a second formulation of the same rule, compared on every
// string of up to 3 bytes, on random 4- to 6-byte strings, and on the encoding of every code point.
#include "data/utf8.h"

#include <cstdint>
#include <random>
#include <string>

#include "absl/strings/escaping.h"
#include "gtest/gtest.h"

namespace nats::data {
namespace {

// Decode-then-check twin of Utf8SequenceLength.
size_t ReferenceSequenceLength(std::string_view s) {
  if (s.empty()) return 0;
  const auto c = static_cast<unsigned char>(s[0]);
  size_t len;
  uint32_t cp;
  if (c < 0x80) return 1;
  if ((c >> 5) == 0x6) {
    len = 2, cp = c & 0x1F;
  } else if ((c >> 4) == 0xE) {
    len = 3, cp = c & 0x0F;
  } else if ((c >> 3) == 0x1E) {
    len = 4, cp = c & 0x07;
  } else {
    return 0;
  }
  if (s.size() < len) return 0;
  for (size_t k = 1; k < len; ++k) {
    const auto b = static_cast<unsigned char>(s[k]);
    if ((b & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b & 0x3F);
  }
  const uint32_t min_cp[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < min_cp[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return len;
}

bool ReferenceIsValid(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const size_t len = ReferenceSequenceLength(s.substr(i));
    if (len == 0) return false;
    i += len;
  }
  return true;
}

std::string Encode(uint32_t cp) {
  std::string out;
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return out;
}

TEST(Utf8, AcceptsWellFormedSequences) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8("plain ascii\n"));
  EXPECT_TRUE(IsValidUtf8(std::string("\0", 1)));
  EXPECT_TRUE(IsValidUtf8("caf\xC3\xA9 \xE2\x80\x94 \xF0\x9F\x98\x80"));  // é, em dash, emoji
  EXPECT_EQ(Utf8SequenceLength("a"), 1u);
  EXPECT_EQ(Utf8SequenceLength("\xC2\x80"), 2u);          // U+0080, the smallest 2-byte
  EXPECT_EQ(Utf8SequenceLength("\xDF\xBF"), 2u);          // U+07FF
  EXPECT_EQ(Utf8SequenceLength("\xE0\xA0\x80"), 3u);      // U+0800, the smallest 3-byte
  EXPECT_EQ(Utf8SequenceLength("\xED\x9F\xBF"), 3u);      // U+D7FF, just below the surrogates
  EXPECT_EQ(Utf8SequenceLength("\xEE\x80\x80"), 3u);      // U+E000, just above them
  EXPECT_EQ(Utf8SequenceLength("\xEF\xBF\xBF"), 3u);      // U+FFFF
  EXPECT_EQ(Utf8SequenceLength("\xF0\x90\x80\x80"), 4u);  // U+10000, the smallest 4-byte
  EXPECT_EQ(Utf8SequenceLength("\xF4\x8F\xBF\xBF"), 4u);  // U+10FFFF, the largest code point
  EXPECT_EQ(Utf8SequenceLength("\xC3\xA9rest"), 2u);      // only the first sequence
}

TEST(Utf8, RejectsIllFormedSequences) {
  const char* const bad[] = {
      "\xC0\x80",          // overlong U+0000
      "\xC1\xBF",          // overlong U+007F
      "\xC0\xAF",          // overlong '/'
      "\xE0\x80\x80",      // overlong 3-byte
      "\xE0\x9F\xBF",      // overlong U+07FF
      "\xF0\x80\x80\x80",  // overlong 4-byte
      "\xF0\x8F\xBF\xBF",  // overlong U+FFFF
      "\xED\xA0\x80",      // U+D800, a UTF-16 surrogate
      "\xED\xBF\xBF",      // U+DFFF
      "\xF4\x90\x80\x80",  // U+110000 > U+10FFFF
      "\xF5\x80\x80\x80",  // lead byte beyond F4
      "\xFF",              //
      "\xC3",              // truncated 2-byte
      "\xE2\x80",          // truncated 3-byte
      "\xF0\x9F\x98",      // truncated 4-byte
      "\x80",              // stray continuation byte
      "\xBF",              //
      "\xC3\x28",          // lead byte without its continuation
      "\xE2\x28\xA1",      //
      "caf\xE9",           // Latin-1 é
  };
  for (const char* s : bad) {
    EXPECT_FALSE(IsValidUtf8(s)) << absl::BytesToHexString(s);
  }
  EXPECT_EQ(Utf8SequenceLength(""), 0u);
  EXPECT_EQ(Utf8SequenceLength("\x80"), 0u);
  EXPECT_EQ(Utf8SequenceLength("\xED\xA0\x80"), 0u);
  EXPECT_EQ(Utf8SequenceLength("\xF0\x9F\x98"), 0u);
  EXPECT_EQ(ValidUtf8PrefixLength("ok\xC3\xA9\x80tail"), 4u);
  EXPECT_EQ(ValidUtf8PrefixLength("\x80ok"), 0u);
  EXPECT_EQ(ValidUtf8PrefixLength("ok\xF0\x9F\x98"), 2u);  // cut short at the end
}

TEST(Utf8, EveryCodePointEncodesToOneValidSequence) {
  for (uint32_t cp = 0; cp <= 0x10FFFF; ++cp) {
    const std::string s = Encode(cp);
    const bool surrogate = cp >= 0xD800 && cp <= 0xDFFF;
    ASSERT_EQ(Utf8SequenceLength(s), surrogate ? 0u : s.size()) << "U+" << std::hex << cp;
  }
}

TEST(Utf8, MatchesReferenceOnAllShortStrings) {
  std::string s;
  for (int len = 1; len <= 3; ++len) {
    s.assign(len, '\0');
    const uint32_t total = 1u << (8 * len);
    for (uint32_t v = 0; v < total; ++v) {
      for (int k = 0; k < len; ++k) s[k] = static_cast<char>(v >> (8 * k));
      ASSERT_EQ(Utf8SequenceLength(s), ReferenceSequenceLength(s)) << "bytes " << std::hex << v;
      ASSERT_EQ(IsValidUtf8(s), ReferenceIsValid(s)) << "bytes " << std::hex << v;
    }
  }
}

TEST(Utf8, MatchesReferenceOnRandomLongerStrings) {
  std::mt19937 rng(11);
  // Bytes drawn mostly from the interesting ranges (leads, continuations) so that long valid runs occur.
  const unsigned char pool[] = {'a',  0x00, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF,
                                0xE0, 0xE1, 0xEC, 0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5, 0xFF};
  std::string s;
  for (int trial = 0; trial < 200000; ++trial) {
    s.resize(4 + rng() % 3);
    for (char& c : s) c = static_cast<char>(pool[rng() % sizeof(pool)]);
    ASSERT_EQ(Utf8SequenceLength(s), ReferenceSequenceLength(s));
    ASSERT_EQ(IsValidUtf8(s), ReferenceIsValid(s));
  }
}

}  // namespace
}  // namespace nats::data
