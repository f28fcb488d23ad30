// Our GPT-2 tokenizer against an independent implementation run live: npm gpt-tokenizer@4.0.0
// (r50k_base) under node, through tests/data/gpt2_peer_encode.js. Whole real books must give
// identical ids, as must a list of strings chosen to stress the pre-tokenizer.
// Needs <NATS_CACHE>/books/raw/{mobydick,sherlock}.txt (launch/fetch_corpus.sh) and the ranks
// file plus the npm peer (launch/fetch_tokenizer.sh); missing data fails the test, never skips it.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "data/gpt2_tokenizer.h"
#include "gtest/gtest.h"

namespace nats::data {
namespace {

constexpr char kFetchHint[] =
    "run `launch/fetch_corpus.sh <repo>/data` and `launch/fetch_tokenizer.sh <repo>/data` first";

std::string Env(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? "" : value;
}

std::string DataDir() { return Env("NATS_CACHE"); }  // the download cache

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// Fails (not skips) the calling test when a prerequisite file is absent.
::testing::AssertionResult HaveFile(const std::string& path) {
  if (std::filesystem::exists(path)) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << path << " is missing; " << kFetchHint;
}

const Gpt2Tokenizer* Gpt2() {
  static const Gpt2Tokenizer* tokenizer = [] {
    absl::StatusOr<std::unique_ptr<Gpt2Tokenizer>> loaded =
        Gpt2Tokenizer::Load(DataDir() + "/tokenizer/r50k_base.tiktoken");
    if (!loaded.ok()) {
      ADD_FAILURE() << loaded.status() << "; " << kFetchHint;
      return static_cast<Gpt2Tokenizer*>(nullptr);
    }
    return loaded->release();
  }();
  return tokenizer;
}

// Ids of each file by the JavaScript peer, in order; one node process for all files since its
// start-up (loading the ranks) dominates small inputs.
std::vector<std::vector<int32_t>> PeerEncode(const std::vector<std::string>& files) {
  std::string command = absl::StrCat("node '", Env("NATS_SOURCE_DIR"), "/tests/data/gpt2_peer_encode.js' '",
                                     DataDir(), "/npm'");
  for (const std::string& file : files) absl::StrAppend(&command, " '", file, "'");
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) {
    ADD_FAILURE() << "cannot run: " << command;
    return {};
  }
  std::string output;
  char chunk[1 << 16];
  size_t got;
  while ((got = std::fread(chunk, 1, sizeof(chunk), pipe)) > 0) output.append(chunk, got);
  const int status = pclose(pipe);
  EXPECT_EQ(status, 0) << "the peer failed: " << command;
  // Each line is a JSON array of non-negative integers.
  std::vector<std::vector<int32_t>> result;
  std::istringstream lines(output);
  std::string line;
  while (std::getline(lines, line)) {
    std::vector<int32_t> ids;
    int32_t value = -1;
    for (char c : line) {
      if (c >= '0' && c <= '9') {
        value = (value < 0 ? 0 : value * 10) + (c - '0');
      } else if (value >= 0) {
        ids.push_back(value);
        value = -1;
      }
    }
    result.push_back(std::move(ids));
  }
  EXPECT_EQ(result.size(), files.size()) << "the peer printed:\n" << output.substr(0, 2000);
  return result;
}

// Equal id lists, or a failure showing where they part and what text is there.
::testing::AssertionResult SameIds(const Gpt2Tokenizer& gpt2, const std::vector<int32_t>& ours,
                                   const std::vector<int32_t>& peer) {
  if (ours == peer) return ::testing::AssertionSuccess();
  size_t i = 0;
  while (i < ours.size() && i < peer.size() && ours[i] == peer[i]) ++i;
  auto show = [&gpt2, i](const std::vector<int32_t>& ids) {
    std::string out;
    for (size_t j = i; j < ids.size() && j < i + 8; ++j) {
      absl::StrAppend(&out, ids[j], "(\"", absl::CHexEscape(gpt2.token_bytes(ids[j])), "\") ");
    }
    return out;
  };
  return ::testing::AssertionFailure()
         << "ids differ at token " << i << " (ours " << ours.size() << " tokens, peer " << peer.size()
         << ")\n  ours: " << show(ours) << "\n  peer: " << show(peer);
}

void ExpectBookMatchesPeer(const std::string& name) {
  const std::string path = DataDir() + "/books/raw/" + name;
  ASSERT_TRUE(HaveFile(path));
  ASSERT_TRUE(HaveFile(DataDir() + "/npm/node_modules/gpt-tokenizer/package.json"));
  const Gpt2Tokenizer* gpt2 = Gpt2();
  ASSERT_NE(gpt2, nullptr);
  const std::string text = ReadFile(path);
  ASSERT_GT(text.size(), 100000u) << path << " looks truncated; " << kFetchHint;

  const auto start = std::chrono::steady_clock::now();
  const std::vector<int32_t> ours = gpt2->Encode(text);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double mb_per_s = text.size() / 1e6 / seconds;
  std::printf("%s: %zu bytes -> %zu tokens in %.3f s (%.1f MB/s)\n", name.c_str(), text.size(), ours.size(),
              seconds, mb_per_s);
  ::testing::Test::RecordProperty("encode_mb_per_s", absl::StrCat(mb_per_s));
  // The design budget: a 1.2 MB book well under 2 s even on a loaded 2-core machine.
  EXPECT_LT(seconds, 2.0);

  const std::vector<std::vector<int32_t>> peer = PeerEncode({path});
  ASSERT_EQ(peer.size(), 1u);
  EXPECT_TRUE(SameIds(*gpt2, ours, peer[0])) << name;
  absl::StatusOr<std::string> decoded = gpt2->Decode(ours);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_TRUE(*decoded == text) << name << ": decode(encode(book)) differs from the book";

  // Every piece of a real book through the heap merge and its quadratic twin.
  for (std::string_view piece : gpt2->SplitPieces(text)) {
    if (piece.size() > 200) continue;  // the twin is quadratic
    ASSERT_EQ(gpt2->EncodePiece(piece), gpt2->EncodePieceReference(piece))
        << "piece \"" << absl::CHexEscape(std::string(piece)) << "\"";
  }
}

TEST(Gpt2Peer, MobyDickIdenticalToNpmGptTokenizer) { ExpectBookMatchesPeer("mobydick.txt"); }

TEST(Gpt2Peer, SherlockIdenticalToNpmGptTokenizer) { ExpectBookMatchesPeer("sherlock.txt"); }

// Strings that stress each branch of the pre-tokenizer. Only characters on which JavaScript's
// `\s`, `\p{L}` and `\p{N}` agree with tiktoken's (so no U+0085 or U+FEFF mid-text, nothing new
// in Unicode 15); tokenizer_test.cpp covers those against expectations written out by hand.
TEST(Gpt2Peer, TrickyStringsIdenticalToNpmGptTokenizer) {
  ASSERT_TRUE(HaveFile(DataDir() + "/npm/node_modules/gpt-tokenizer/package.json"));
  const Gpt2Tokenizer* gpt2 = Gpt2();
  ASSERT_NE(gpt2, nullptr);
  const std::vector<std::string> texts = {
      "  hello\n\n\nworld  ",
      "I'll",
      "'S",
      "'s 's 'S 't 're 've 'm 'll 'd 'x '' ''s",
      "don't DON'T you'RE we've I'M they'LL she'D",
      "123456789",
      "1,234.56 3.14e-10 0xFF 10% $5 #1 2nd 1/2",
      "\t\t x",
      "\t\t\n x\n \n\n  \t",
      "a b  c   d    e     f",
      "trailing   ",
      "   ",
      "\n",
      "\r\n\r\n  \r\nx\r\n",
      "<|endoftext|> <|endoftext|>x",
      "emoji 👍🏽🚀 👨‍👩‍👧‍👦 family, 🏳️‍🌈 flag",
      "東京タワーは高い。中文字符、한국어 텍스트",
      "Привет, мир! Ελληνικά. עברית. مرحبا بالعالم",
      "नमस्ते दुनिया — combining marks",
      "e\u0301 a\u0308 n\u0303 (combining)",
      "١٢٣ ۴۵۶ ①②③ ½¾ Ⅻ ²³ 𝟙𝟚",
      "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝐁𝐨𝐥𝐝 ℌ",
      "nbsp\u00a0\u00a0x thin\u2009x ideographic\u3000\u3000x",
      "line\u2028sep\u2029para",
      "\x0b\x0c\x0b x",
      "ctl\x1c\x1d\x1e\x1f x \x01\x02",
      "mongolian\u180e\u180ex \u180e y",
      "x \u180ey z\u180e. \u180e\u180e!  \u180e  w",
      "zero\u200bwidth\u200d joiner\u2060",
      "!!! ??? ... --- *** ___ ~~~ ``` \"\"\" '''",
      "https://example.com/path?q=1&r=2#frag",
      "snake_case camelCase kebab-case SCREAMING_CASE",
      std::string(3000, ' ') + "x",
      std::string(2000, '9') + " " + std::string(1500, '\n'),
      "ab" + std::string(500, '!') + "cd",
  };
  const std::string dir = ::testing::TempDir() + "/gpt2_peer_strings";
  std::filesystem::create_directories(dir);
  std::vector<std::string> files;
  for (size_t i = 0; i < texts.size(); ++i) {
    files.push_back(absl::StrCat(dir, "/", i, ".txt"));
    std::ofstream(files.back(), std::ios::binary) << texts[i];
  }
  const std::vector<std::vector<int32_t>> peer = PeerEncode(files);
  ASSERT_EQ(peer.size(), texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    SCOPED_TRACE(absl::StrCat("string ", i, ": \"", absl::CHexEscape(texts[i].substr(0, 60)), "\""));
    const std::vector<int32_t> ours = gpt2->Encode(texts[i]);
    EXPECT_TRUE(SameIds(*gpt2, ours, peer[i]));
    EXPECT_EQ(*gpt2->Decode(ours), texts[i]);
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace nats::data
