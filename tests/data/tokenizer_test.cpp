// Tests of data/tokenizer.h, data/byte_tokenizer.h, data/gpt2_tokenizer.h and data/sha256.h that
// need no JavaScript peer and no corpus: SHA-256 against sha256sum, the GPT-2 tokenizer against
// the five reference cases three JavaScript tokenizers agree on
// (tests/data/gpt2_reference_tokens.json), and the fast BPE against its slow twin.
// Needs <NATS_CACHE>/tokenizer/r50k_base.tiktoken (launch/fetch_tokenizer.sh).
#include "data/tokenizer.h"

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "data/byte_tokenizer.h"
#include "data/gpt2_tokenizer.h"
#include "data/sha256.h"
#include "gtest/gtest.h"

namespace nats::data {
namespace {

std::string EnvOrDie(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr) {
    ADD_FAILURE() << name << " is not set; run this test through ctest";
    return "";
  }
  return value;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

std::string RanksPath() { return EnvOrDie("NATS_CACHE") + "/tokenizer/r50k_base.tiktoken"; }

// Loaded once: parsing and hashing the ranks file is the slow part of every GPT-2 test.
const Gpt2Tokenizer& Gpt2() {
  static const Gpt2Tokenizer* tokenizer = [] {
    absl::StatusOr<std::unique_ptr<Gpt2Tokenizer>> loaded = Gpt2Tokenizer::Load(RanksPath());
    if (!loaded.ok()) {
      std::fprintf(stderr, "%s\n(run launch/fetch_tokenizer.sh <repo>/data first)\n",
                   std::string(loaded.status().message()).c_str());
      std::abort();
    }
    return loaded->release();
  }();
  return *tokenizer;
}

std::string HexToBytes(const std::string& hex) { return absl::HexStringToBytes(hex); }

// ---------------------------------------------------------------------------------------------
// SHA-256

std::string Sha256sumOf(const std::string& path) {
  FILE* pipe = popen(("sha256sum '" + path + "'").c_str(), "r");
  if (pipe == nullptr) return "";
  char digest[65] = {};
  const size_t got = std::fread(digest, 1, 64, pipe);
  pclose(pipe);
  return std::string(digest, got);
}

TEST(Sha256, Fips180Vectors) {
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256Hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(Sha256Hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

// Every length around the padding boundaries (55/56/64 mod 64) against coreutils.
TEST(Sha256, MatchesSha256sumAcrossPaddingBoundaries) {
  const std::string dir = ::testing::TempDir();
  std::mt19937 rng(7);
  for (size_t len = 0; len <= 200; ++len) {
    std::string bytes(len, '\0');
    for (char& c : bytes) c = static_cast<char>(rng());
    const std::string path = absl::StrCat(dir, "/sha256_input_", len);
    std::ofstream(path, std::ios::binary) << bytes;
    const std::string expected = Sha256sumOf(path);
    ASSERT_EQ(expected.size(), 64u) << "sha256sum failed on " << path;
    EXPECT_EQ(Sha256Hex(bytes), expected) << "length " << len;
    absl::StatusOr<std::string> from_file = Sha256HexOfFile(path);
    ASSERT_TRUE(from_file.ok()) << from_file.status();
    EXPECT_EQ(*from_file, expected) << "length " << len;
    std::remove(path.c_str());
  }
}

// More than one read chunk of Sha256HexOfFile (64 KiB), and not a multiple of it.
TEST(Sha256, MatchesSha256sumOnAMegabyte) {
  const std::string path = absl::StrCat(::testing::TempDir(), "/sha256_input_1mb");
  std::mt19937 rng(8);
  std::string bytes((1 << 20) + 3, '\0');
  for (char& c : bytes) c = static_cast<char>(rng());
  std::ofstream(path, std::ios::binary) << bytes;
  const std::string expected = Sha256sumOf(path);
  ASSERT_EQ(expected.size(), 64u) << "sha256sum failed on " << path;
  EXPECT_EQ(Sha256Hex(bytes), expected);
  absl::StatusOr<std::string> from_file = Sha256HexOfFile(path);
  ASSERT_TRUE(from_file.ok()) << from_file.status();
  EXPECT_EQ(*from_file, expected);
  std::remove(path.c_str());
}

// A file of the repository, as it is on disk.
TEST(Sha256, FileMatchesSha256sumOfACheckedInFile) {
  const std::string path = EnvOrDie("NATS_SOURCE_DIR") + "/tests/data/gpt2_reference_tokens.json";
  const std::string expected = Sha256sumOf(path);
  ASSERT_EQ(expected.size(), 64u) << "sha256sum failed on " << path;
  absl::StatusOr<std::string> from_file = Sha256HexOfFile(path);
  ASSERT_TRUE(from_file.ok()) << from_file.status();
  EXPECT_EQ(*from_file, expected);
  EXPECT_EQ(Sha256Hex(ReadFile(path)), expected);
}

TEST(Sha256, MissingFileIsNotFound) {
  absl::StatusOr<std::string> digest = Sha256HexOfFile("/nonexistent/sha256/input");
  EXPECT_EQ(digest.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(digest.status().message(), "/nonexistent/sha256/input"));
}

// ---------------------------------------------------------------------------------------------
// Factory and byte tokenizer

TEST(MakeTokenizer, UnknownNameNamesTheFieldAndTheAllowedValues) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = MakeTokenizer("bpe", "/tmp");
  ASSERT_EQ(tokenizer.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string message(tokenizer.status().message());
  EXPECT_TRUE(absl::StrContains(message, "data.tokenizer")) << message;
  EXPECT_TRUE(absl::StrContains(message, "\"gpt2\"")) << message;
  EXPECT_TRUE(absl::StrContains(message, "\"byte\"")) << message;
  EXPECT_TRUE(absl::StrContains(message, "bpe")) << message;
}

TEST(MakeTokenizer, BuildsBothTokenizers) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> byte = MakeTokenizer("byte", "/nonexistent");
  ASSERT_TRUE(byte.ok()) << byte.status();
  EXPECT_EQ((*byte)->name(), "byte");
  absl::StatusOr<std::unique_ptr<Tokenizer>> gpt2 = MakeTokenizer("gpt2", EnvOrDie("NATS_CACHE"));
  ASSERT_TRUE(gpt2.ok()) << gpt2.status();
  EXPECT_EQ((*gpt2)->name(), "gpt2");
  EXPECT_EQ((*gpt2)->vocab_size(), 50257);
  EXPECT_EQ((*gpt2)->eot_id(), 50256);
}

TEST(ByteTokenizer, RoundTripsEveryByte) {
  ByteTokenizer tokenizer;
  EXPECT_EQ(tokenizer.vocab_size(), 257);
  EXPECT_EQ(tokenizer.eot_id(), 256);
  std::string all_bytes;
  for (int b = 0; b < 256; ++b) all_bytes.push_back(static_cast<char>(b));
  const std::string text = all_bytes + "Hello, world! 東京 \xff\xfe";
  const std::vector<int32_t> ids = tokenizer.Encode(text);
  ASSERT_EQ(ids.size(), text.size());
  for (int b = 0; b < 256; ++b) EXPECT_EQ(ids[b], b);
  absl::StatusOr<std::string> decoded = tokenizer.Decode(ids);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(*decoded, text);
  EXPECT_EQ(*tokenizer.Decode(std::vector<int32_t>{104, 105, 256}), "hi<|endoftext|>");
}

TEST(ByteTokenizer, OutOfRangeIdIsAnError) {
  ByteTokenizer tokenizer;
  for (int32_t bad : {257, -1, 1 << 30}) {
    absl::StatusOr<std::string> decoded = tokenizer.Decode(std::vector<int32_t>{65, bad});
    ASSERT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_TRUE(absl::StrContains(decoded.status().message(), absl::StrCat(bad))) << bad;
  }
}

// ---------------------------------------------------------------------------------------------
// GPT-2: loading

TEST(Gpt2Tokenizer, RanksFileHasThePinnedDigest) {
  absl::StatusOr<std::string> digest = Sha256HexOfFile(RanksPath());
  ASSERT_TRUE(digest.ok()) << digest.status() << "; run launch/fetch_tokenizer.sh";
  EXPECT_EQ(*digest, Gpt2Tokenizer::kRanksSha256);
}

TEST(Gpt2Tokenizer, MissingFileNamesThePathAndTheFix) {
  const std::string path = "/nonexistent/data/tokenizer/r50k_base.tiktoken";
  absl::StatusOr<std::unique_ptr<Gpt2Tokenizer>> tokenizer = Gpt2Tokenizer::Load(path);
  ASSERT_EQ(tokenizer.status().code(), absl::StatusCode::kNotFound);
  const std::string message(tokenizer.status().message());
  EXPECT_TRUE(absl::StrContains(message, path)) << message;
  EXPECT_TRUE(absl::StrContains(message, "launch/fetch_tokenizer.sh /nonexistent/data")) << message;

  absl::StatusOr<std::unique_ptr<Tokenizer>> via_factory = MakeTokenizer("gpt2", "/nonexistent/d");
  ASSERT_EQ(via_factory.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(
      absl::StrContains(via_factory.status().message(), "/nonexistent/d/tokenizer/r50k_base.tiktoken"));
}

TEST(Gpt2Tokenizer, CorruptedFileNamesThePathAndTheFix) {
  std::string contents = ReadFile(RanksPath());
  ASSERT_FALSE(contents.empty());
  const std::string dir = ::testing::TempDir() + "/corrupt_data/tokenizer";
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/r50k_base.tiktoken";
  // One flipped base64 character: a file that still parses but is not the pinned vocabulary.
  contents[0] = contents[0] == 'I' ? 'J' : 'I';
  std::ofstream(path, std::ios::binary) << contents;
  absl::StatusOr<std::unique_ptr<Gpt2Tokenizer>> tokenizer = Gpt2Tokenizer::Load(path);
  ASSERT_EQ(tokenizer.status().code(), absl::StatusCode::kDataLoss);
  const std::string message(tokenizer.status().message());
  EXPECT_TRUE(absl::StrContains(message, path)) << message;
  EXPECT_TRUE(absl::StrContains(message, "SHA-256")) << message;
  EXPECT_TRUE(absl::StrContains(message, "launch/fetch_tokenizer.sh")) << message;

  std::ofstream(path, std::ios::binary | std::ios::trunc) << "";  // truncated to nothing
  EXPECT_EQ(Gpt2Tokenizer::Load(path).status().code(), absl::StatusCode::kDataLoss);
  std::filesystem::remove_all(::testing::TempDir() + "/corrupt_data");
}

// ---------------------------------------------------------------------------------------------
// GPT-2: reference cases (gpt2_reference_tokens.json)

struct ReferenceCase {
  std::string name;
  std::string text;
  std::vector<int32_t> ids;
  std::vector<std::string> token_bytes;
};

// A parser for this one file's shape only: each case has "name", "utf8_hex" (the text; hex avoids
// JSON string escapes), "ids" (an array of integers) and "piece_bytes_hex" (an array of hex
// strings, the bytes of each token), in that order.
class ReferenceParser {
 public:
  explicit ReferenceParser(std::string json) : json_(std::move(json)) {}

  std::vector<ReferenceCase> Cases() {
    std::vector<ReferenceCase> cases;
    while (true) {
      ReferenceCase c;
      if (!Seek("\"name\"")) break;
      c.name = String();
      if (!Seek("\"utf8_hex\"")) break;
      c.text = HexToBytes(String());
      if (!Seek("\"ids\"")) break;
      Expect('[');
      while (Peek() != ']') {
        c.ids.push_back(static_cast<int32_t>(std::strtol(json_.c_str() + pos_, nullptr, 10)));
        while (std::isdigit(static_cast<unsigned char>(json_[pos_]))) ++pos_;
        if (Peek() == ',') ++pos_;
      }
      if (!Seek("\"piece_bytes_hex\"")) break;
      Expect('[');
      while (Peek() != ']') {
        c.token_bytes.push_back(HexToBytes(String()));
        if (Peek() == ',') ++pos_;
      }
      cases.push_back(std::move(c));
    }
    return cases;
  }

 private:
  // Moves past the next occurrence of `key` and its colon.
  bool Seek(const std::string& key) {
    const size_t at = json_.find(key, pos_);
    if (at == std::string::npos) return false;
    pos_ = at + key.size();
    Expect(':');
    return true;
  }
  char Peek() {
    while (pos_ < json_.size() && std::isspace(static_cast<unsigned char>(json_[pos_]))) ++pos_;
    return pos_ < json_.size() ? json_[pos_] : '\0';
  }
  void Expect(char c) {
    EXPECT_EQ(Peek(), c) << "at byte " << pos_ << " of gpt2_reference_tokens.json";
    ++pos_;
  }
  // A string without escapes (names and hex only).
  std::string String() {
    Expect('"');
    const size_t end = json_.find('"', pos_);
    std::string s = json_.substr(pos_, end - pos_);
    pos_ = end + 1;
    return s;
  }

  std::string json_;
  size_t pos_ = 0;
};

std::vector<ReferenceCase> LoadReferenceCases() {
  const std::string path = EnvOrDie("NATS_SOURCE_DIR") + "/tests/data/gpt2_reference_tokens.json";
  const std::string json = ReadFile(path);
  EXPECT_FALSE(json.empty()) << path << " is missing or empty";
  return ReferenceParser(json).Cases();
}

TEST(Gpt2Tokenizer, MatchesTheReferenceCases) {
  const std::vector<ReferenceCase> cases = LoadReferenceCases();
  ASSERT_EQ(cases.size(), 5u);
  for (const ReferenceCase& c : cases) {
    SCOPED_TRACE(c.name);
    ASSERT_EQ(c.ids.size(), c.token_bytes.size());
    EXPECT_EQ(Gpt2().Encode(c.text), c.ids);
    absl::StatusOr<std::string> decoded = Gpt2().Decode(c.ids);
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(*decoded, c.text);
    for (size_t i = 0; i < c.ids.size(); ++i) {
      EXPECT_EQ(Gpt2().token_bytes(c.ids[i]), c.token_bytes[i]) << "token " << i;
    }
  }
}

TEST(Gpt2Tokenizer, DecodeHandlesEotAndRejectsOutOfRangeIds) {
  EXPECT_EQ(*Gpt2().Decode(std::vector<int32_t>{31373, 50256, 995}), "hello<|endoftext|> world");
  for (int32_t bad : {50257, -1, 100000}) {
    absl::StatusOr<std::string> decoded = Gpt2().Decode(std::vector<int32_t>{31373, bad});
    ASSERT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_TRUE(absl::StrContains(decoded.status().message(), absl::StrCat(bad))) << bad;
  }
}

TEST(Gpt2Tokenizer, SpecialTokenTextIsPlainText) {
  const std::vector<int32_t> ids = Gpt2().Encode("a<|endoftext|>b");
  for (int32_t id : ids) EXPECT_NE(id, Gpt2Tokenizer::kEotId);
  EXPECT_EQ(*Gpt2().Decode(ids), "a<|endoftext|>b");
  EXPECT_TRUE(Gpt2().Encode("").empty());
}

// ---------------------------------------------------------------------------------------------
// GPT-2: pre-tokenizer details the JavaScript peer cannot check (its `\s` differs from tiktoken's).

std::vector<std::string> Pieces(std::string_view text) {
  std::vector<std::string> out;
  for (std::string_view piece : Gpt2().SplitPieces(text)) out.emplace_back(piece);
  return out;
}

TEST(Gpt2Tokenizer, WhitespaceIsTheUnicodeWhiteSpaceProperty) {
  using V = std::vector<std::string>;
  // The last space of a run goes to the next word; a trailing run stays whole.
  EXPECT_EQ(Pieces("a   b  "), (V{"a", "  ", " b", "  "}));
  EXPECT_EQ(Pieces("x\n\n\ny"), (V{"x", "\n\n", "\n", "y"}));
  // U+0085 (NEL) is White_Space (tiktoken/Rust; JavaScript's \s lacks it).
  EXPECT_EQ(Pieces("x\u0085\u0085y"), (V{"x", "\u0085", "\u0085", "y"}));
  // U+FEFF is not White_Space (JavaScript's \s has it): it joins the punctuation after it.
  EXPECT_EQ(Pieces("\uFEFF.x"), (V{"\uFEFF.", "x"}));
  // U+180E is not White_Space since Unicode 6.3 (PCRE2's UCP \s still matches it).
  EXPECT_EQ(Pieces("x\u180E\u180Ey"), (V{"x", "\u180E\u180E", "y"}));
  // Contractions are case-sensitive.
  EXPECT_EQ(Pieces("I'll DON'T"), (V{"I", "'ll", " DON", "'", "T"}));
}

TEST(Gpt2Tokenizer, InvalidUtf8IsLosslessAndSplitsOff) {
  using V = std::vector<std::string>;
  EXPECT_EQ(Pieces("ab\xff\xfe cd"), (V{"ab", "\xff\xfe", " cd"}));
  // A surrogate (ED A0 80) and an overlong slash (C0 AF) are ill-formed; the "é" after is fine.
  EXPECT_EQ(Pieces("\xed\xa0\x80\xc0\xaf\xc3\xa9t\xe6\x9d"),
            (V{"\xed\xa0\x80\xc0\xaf", "\xc3\xa9t", "\xe6\x9d"}));
  std::mt19937 rng(11);
  for (int trial = 0; trial < 200; ++trial) {
    std::string text(rng() % 400, '\0');
    for (char& c : text) c = static_cast<char>(rng());
    // Mix in valid multibyte text so that boundaries between the two kinds get exercised.
    if (trial % 2 == 0) text += "Ünïcödé 東京 ok";
    std::string joined;
    for (std::string_view piece : Gpt2().SplitPieces(text)) joined += piece;
    ASSERT_EQ(joined, text);
    absl::StatusOr<std::string> decoded = Gpt2().Decode(Gpt2().Encode(text));
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    ASSERT_EQ(*decoded, text);
  }
}

// ---------------------------------------------------------------------------------------------
// GPT-2: the heap BPE against tiktoken's quadratic loop

TEST(Gpt2Tokenizer, HeapMergeMatchesTiktokenLoopOnRandomPieces) {
  std::mt19937 rng(3);
  const std::vector<std::string> alphabets = {
      "ab", "abc ", "e t.a", "0123456789", " \n", "\xe6\x9d\xb1\xe4\xba\xac", "'sltre"};
  for (int trial = 0; trial < 3000; ++trial) {
    std::string piece(1 + rng() % 120, '\0');
    if (trial % 8 == 7) {
      for (char& c : piece) c = static_cast<char>(rng());
    } else {
      const std::string& alphabet = alphabets[trial % alphabets.size()];
      for (char& c : piece) c = alphabet[rng() % alphabet.size()];
    }
    ASSERT_EQ(Gpt2().EncodePiece(piece), Gpt2().EncodePieceReference(piece))
        << "piece hex " << absl::BytesToHexString(piece);
  }
  for (const char* word : {"Hello", " antidisestablishmentarianism", " supercalifragilistic",
                           "                                ", "1234567890123456789"}) {
    EXPECT_EQ(Gpt2().EncodePiece(word), Gpt2().EncodePieceReference(word)) << word;
  }
}

TEST(Gpt2Tokenizer, HugePiecesStayFast) {
  // One piece of 2 MB: the quadratic loop would take hours; the heap takes well under a second.
  const std::string spaces(2 << 20, ' ');
  const std::vector<int32_t> ids = Gpt2().Encode(spaces + "x");
  EXPECT_EQ(*Gpt2().Decode(ids), spaces + "x");
  const std::string digits(1 << 20, '7');
  EXPECT_EQ(*Gpt2().Decode(Gpt2().Encode(digits)), digits);
}

}  // namespace
}  // namespace nats::data
