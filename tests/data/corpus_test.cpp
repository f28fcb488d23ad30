// Corpus cleaning on small synthetic strings (each step alone), then on the real fetched books.
#include "data/corpus.h"

#include <unistd.h>
#include <zlib.h>

#include <cstdlib>
#include <fstream>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "data/prepare.h"
#include "data/token_shard.h"
#include "data/tokenizer.h"
#include "data/utf8.h"
#include "gtest/gtest.h"

namespace nats::data {
namespace {

TEST(Corpus, StripsBomAndCrlf) {
  EXPECT_EQ(NormalizeNewlines("\xEF\xBB\xBFHello\r\nworld\r\n"), "Hello\nworld\n");
  EXPECT_EQ(NormalizeNewlines("old\rmac\r\n\r\nend"), "old\nmac\n\nend");
  // A BOM that is not at the very start is text, not a mark.
  EXPECT_EQ(NormalizeNewlines("a\xEF\xBB\xBF"), "a\xEF\xBB\xBF");
}

TEST(Corpus, Latin1AndCp1252ToUtf8) {
  EXPECT_EQ(Cp1252ToUtf8("caf\xE9 na\xEFve \xA9"), "caf\xC3\xA9 na\xC3\xAFve \xC2\xA9");
  // The bytes Poe uses that plain Latin-1 would get wrong: dagger, double dagger, oe ligature.
  EXPECT_EQ(Cp1252ToUtf8("\x86\x87\x9C\x8C"), "\xE2\x80\xA0\xE2\x80\xA1\xC5\x93\xC5\x92");
  EXPECT_EQ(Cp1252ToUtf8("\x81"), "\xC2\x81");  // undefined in CP1252: same-numbered code point
  // ToUtf8 leaves valid UTF-8 alone (no double encoding) and converts the rest.
  EXPECT_EQ(ToUtf8("caf\xC3\xA9"), "caf\xC3\xA9");
  EXPECT_EQ(ToUtf8("caf\xE9"), "caf\xC3\xA9");
  EXPECT_TRUE(IsValidUtf8(ToUtf8(std::string("\x80\x90\xFF\xA0", 4))));
}

TEST(Corpus, StripsModernGutenbergMarkers) {
  const std::string text =
      "The Project Gutenberg EBook of X\nlicense blah\n"
      "*** START OF THIS PROJECT GUTENBERG EBOOK X ***\n"
      "Chapter 1\nCall me Ishmael.\n\n"
      "End of the Project Gutenberg EBook of X, by\nSome Author\n\n"
      "*** END OF THIS PROJECT GUTENBERG EBOOK X ***\n"
      "*** START: FULL LICENSE ***\nmore license\n";
  EXPECT_EQ(StripGutenbergBoilerplate(text), "Chapter 1\nCall me Ishmael.\n\n\n");
  // Variant spelling and only one of the two markers present.
  EXPECT_EQ(StripGutenbergBoilerplate("head\n***START OF THE PROJECT GUTENBERG EBOOK Y***\nbody\n"),
            "body\n");
  EXPECT_EQ(StripGutenbergBoilerplate("body\n*** END OF THE PROJECT GUTENBERG EBOOK Y ***\ntail\n"),
            "body\n");
  // No markers: unchanged, including a line that merely mentions a start.
  const std::string plain = "*** START: a heading ***\nThe start of the story.\n";
  EXPECT_EQ(StripGutenbergBoilerplate(plain), plain);
}

TEST(Corpus, StripsOldSmallPrintHeadersPerVolume) {
  const std::string text =
      "The Project Gutenberg Etext of Works V. 1\nplease donate\n"
      "***START**THE SMALL PRINT!**FOR PUBLIC DOMAIN ETEXTS**START***\nlawyers\n"
      "*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*\n"
      "Volume one text.\n"
      "End of The Project Gutenberg Etext of Works V. 1\n"
      "The Project Gutenberg Etext of Works V. 2\nmore header\n"
      "*END THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.07/27/01*END*\n"
      "Volume two text.\n"
      "End of The Project Gutenberg Etext of Works V. 2\n";
  EXPECT_EQ(StripGutenbergBoilerplate(text), "Volume one text.\nVolume two text.\n");
  // A header start with no small-print end nearby is kept (it is text, not a header).
  const std::string stray = "The Project Gutenberg Etext of nothing\nstory\n";
  EXPECT_EQ(StripGutenbergBoilerplate(stray), stray);
}

TEST(Corpus, StripsVerseReferences) {
  const std::string kjv =
      "Holy Bible, Authorized (King James) Version.\n"
      "Ge1:1 In the beginning God created the heaven and the earth.\n"
      "Ge50:26 So Joseph died.\n"
      "Exo1:1 Now these are the names.\n"
      "1Cor13:4 Charity suffereth long.\n"
      "SSol1:1 The song of songs.\n";
  EXPECT_EQ(StripVerseReferences(kjv),
            "Holy Bible, Authorized (King James) Version.\n"
            "In the beginning God created the heaven and the earth.\n"
            "So Joseph died.\n"
            "\nNow these are the names.\n"
            "\nCharity suffereth long.\n"
            "\nThe song of songs.\n");
  // Text that only resembles a reference stays.
  EXPECT_EQ(StripVerseReferences("Ge1:1\nA1:2x\n"), "Ge1:1\nA1:2x\n");
}

TEST(Corpus, CleanBookTextRunsEveryStep) {
  const std::string raw =
      "\xEF\xBB\xBFHeader\r\n*** START OF THIS PROJECT GUTENBERG EBOOK Z ***\r\n\r\n\r\n"
      "Caf\xC3\xA9 text.\r\n\r\n*** END OF THIS PROJECT GUTENBERG EBOOK Z ***\r\nfooter\r\n";
  EXPECT_EQ(CleanBookText(raw, {}), "Caf\xC3\xA9 text.\n");
  EXPECT_EQ(CleanBookText("Latin \xE9\r\nlast line without newline", {}),
            "Latin \xC3\xA9\nlast line without newline\n");
}

TEST(Corpus, BookListAndSplit) {
  std::set<std::string> train, val;
  for (const BookSpec& book : DemoBooks()) {
    (book.split == Split::kTrain ? train : val).insert(std::string(book.name));
  }
  EXPECT_EQ(train,
            (std::set<std::string>{"mobydick", "poe", "huckfinn", "sherlock", "kjv", "emma", "mansfieldpark",
                                   "northangerabbey", "persuasion", "prideprejudice", "sensesensibility"}));
  EXPECT_EQ(val, (std::set<std::string>{"tomsawyer", "opticks"}));
}

// Builds an .rdb record the way R's lazy-load database stores a character vector (XDR format 3).
std::string RdbRecord(const std::vector<std::pair<std::string, int32_t>>& strings /* text, CHARSXP flags */) {
  std::string xdr = "X\n";
  auto put = [&](int32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8)
      xdr.push_back(static_cast<char>((static_cast<uint32_t>(v) >> shift) & 0xFF));
  };
  put(3), put(0x00040201), put(0x00030500), put(5);
  xdr += "UTF-8";
  put(16), put(static_cast<int32_t>(strings.size()));
  for (const auto& [text, flags] : strings) {
    put(flags);
    if (text == "<NA>") {
      put(-1);
      continue;
    }
    put(static_cast<int32_t>(text.size()));
    xdr += text;
  }
  uLongf compressed_len = compressBound(xdr.size());
  std::string compressed(compressed_len, '\0');
  EXPECT_EQ(compress(reinterpret_cast<Bytef*>(compressed.data()), &compressed_len,
                     reinterpret_cast<const Bytef*>(xdr.data()), xdr.size()),
            Z_OK);
  compressed.resize(compressed_len);
  std::string record;
  for (int shift = 24; shift >= 0; shift -= 8)
    record.push_back(static_cast<char>((xdr.size() >> shift) & 0xFF));
  return record + compressed;
}

TEST(Corpus, DecodesRCharacterVectors) {
  constexpr int32_t kAscii = 0x40009, kUtf8 = 0x8009, kLatin1 = 0x4009;
  std::string rdb = RdbRecord({{"EMMA", kAscii}, {"", kAscii}, {"Caf\xC3\xA9", kUtf8}}) +
                    RdbRecord({{"PERSUASION", kAscii}, {"<NA>", kAscii}, {"na\xEFve", kLatin1}});
  absl::StatusOr<std::vector<std::vector<std::string>>> records = DecodeRCharacterVectors(rdb, "test.rdb");
  ASSERT_TRUE(records.ok()) << records.status();
  ASSERT_EQ(records->size(), 2u);
  EXPECT_EQ((*records)[0], (std::vector<std::string>{"EMMA", "", "Caf\xC3\xA9"}));
  EXPECT_EQ((*records)[1], (std::vector<std::string>{"PERSUASION", "", "na\xC3\xAFve"}));

  // Damage: cut inside the second record, and a flipped byte in a zlib stream.
  absl::StatusOr<std::vector<std::vector<std::string>>> cut =
      DecodeRCharacterVectors(rdb.substr(0, rdb.size() - 3), "cut.rdb");
  ASSERT_FALSE(cut.ok());
  EXPECT_NE(cut.status().message().find("cut.rdb"), std::string::npos) << cut.status();
  std::string flipped = rdb;
  flipped[10] ^= 0x55;
  EXPECT_FALSE(DecodeRCharacterVectors(flipped, "flipped.rdb").ok());
}

TEST(Corpus, MissingBookNamesFetchScript) {
  absl::StatusOr<std::string> book = LoadCleanBook("/nonexistent_data_dir", DemoBooks()[0]);
  ASSERT_FALSE(book.ok());
  EXPECT_EQ(book.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(book.status().message().find("fetch_corpus.sh"), std::string::npos) << book.status();
  EXPECT_NE(book.status().message().find("/nonexistent_data_dir/books/raw/"), std::string::npos)
      << book.status();
}

// The real books, as launch/fetch_corpus.sh leaves them.
TEST(Corpus, RealBooksCleanUp) {
  const char* data_dir_env = std::getenv("NATS_CACHE");
  ASSERT_NE(data_dir_env, nullptr) << "NATS_CACHE is not set (CTest sets it to the download cache)";
  const std::string data_dir = data_dir_env;
  for (const BookSpec& book : DemoBooks()) {
    SCOPED_TRACE(std::string(book.name));
    absl::StatusOr<std::string> text = LoadCleanBook(data_dir, book);
    ASSERT_TRUE(text.ok()) << text.status() << "\nfetch the demo corpus first: launch/fetch_corpus.sh "
                           << data_dir;
    EXPECT_GT(text->size(), 300000u);  // the smallest book, Tom Sawyer, is ~380 kB
    EXPECT_TRUE(IsValidUtf8(*text));
    EXPECT_EQ(text->find('\r'), std::string::npos);
    EXPECT_NE(text->substr(0, 3), "\xEF\xBB\xBF");
    EXPECT_EQ(text->find("*** START OF"), std::string::npos);
    EXPECT_EQ(text->find("*** END OF"), std::string::npos);
    EXPECT_EQ(text->find("SMALL PRINT"), std::string::npos);
    EXPECT_EQ(text->find("Project Gutenberg Etext of"), std::string::npos);
    EXPECT_EQ(text->find("End of the Project Gutenberg"), std::string::npos);
    EXPECT_EQ(text->find("End of Project Gutenberg"), std::string::npos);
    EXPECT_EQ(text->back(), '\n');
  }
  // Book-specific facts that would break if a cleaning step went wrong.
  auto load = [&](std::string_view name) {
    for (const BookSpec& book : DemoBooks()) {
      if (book.name == name) return *LoadCleanBook(data_dir, book);
    }
    return std::string();
  };
  std::string moby = load("mobydick");
  EXPECT_NE(moby.find("Call me Ishmael."), std::string::npos);
  EXPECT_EQ(moby.find("FULL LICENSE"), std::string::npos);
  std::string poe = load("poe");
  EXPECT_NE(poe.find("\xE2\x80\xA1"),
            std::string::npos);  // the Gold-Bug cipher's double dagger, from CP1252 0x87
  EXPECT_NE(poe.find("Once upon a midnight dreary"), std::string::npos);
  EXPECT_EQ(poe.find("\xC2\x87"), std::string::npos);  // not a C1 control (what Latin-1 decoding would give)
  std::string kjv = load("kjv");
  EXPECT_EQ(kjv.find("Ge1:1"), std::string::npos);
  EXPECT_NE(kjv.find("\nIn the beginning God created the heaven and the earth.\n"), std::string::npos);
  EXPECT_NE(kjv.find("\nThe grace of our Lord Jesus Christ be with you all. Amen.\n"), std::string::npos);
  std::string pride = load("prideprejudice");
  EXPECT_EQ(pride.substr(0, 20), "PRIDE AND PREJUDICE\n");
  EXPECT_NE(pride.find("It is a truth universally acknowledged"), std::string::npos);
  EXPECT_NE(load("persuasion").find("Sir Walter Elliot, of Kellynch Hall"), std::string::npos);
  std::string sherlock = load("sherlock");
  EXPECT_NE(sherlock.find("To Sherlock Holmes she is always THE woman."), std::string::npos);
}

// `nats prepare` end to end with the byte tokenizer, where the expected shard follows from the clean text
// alone: each document is eot followed by the book's bytes, in book order, whole books in their split.
TEST(Prepare, ByteShardsHoldTheCleanBooksInOrder) {
  const char* data_dir_env = std::getenv("NATS_CACHE");
  ASSERT_NE(data_dir_env, nullptr);
  PrepareOptions options;
  options.data_dir = data_dir_env;
  options.out_dir = std::string(::testing::TempDir()) + "/prepare_test_" + std::to_string(::getpid());
  options.tokenizer = "byte";
  options.log = nullptr;
  absl::StatusOr<PrepareSummary> summary = PrepareCorpusWithSummary(options);
  ASSERT_TRUE(summary.ok()) << summary.status() << "\nfetch the demo corpus first: launch/fetch_corpus.sh "
                            << options.data_dir;
  ASSERT_EQ(summary->books.size(), DemoBooks().size());
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = MakeTokenizer("byte", options.data_dir);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  const int32_t eot = (*tokenizer)->eot_id();
  ASSERT_GE(eot, 256);  // not a byte

  for (Split split : {Split::kTrain, Split::kVal}) {
    const std::string path = options.out_dir + "/" + std::string(SplitName(split)) + ".tok";
    absl::StatusOr<TokenShard> shard = TokenShard::Open(path);
    ASSERT_TRUE(shard.ok()) << shard.status();
    uint64_t pos = 0, doc = 0;
    for (const BookSpec& book : DemoBooks()) {
      if (book.split != split) continue;
      SCOPED_TRACE(std::string(book.name));
      std::string text = *LoadCleanBook(options.data_dir, book);
      ASSERT_LT(doc, shard->num_documents());
      EXPECT_EQ(shard->document_starts()[doc], pos);
      EXPECT_EQ(shard->token(pos), eot);  // each document starts with eot
      std::vector<int32_t> got(text.size());
      shard->Read(pos + 1, got.size(), got.data());
      for (size_t i = 0; i < text.size(); ++i) {
        ASSERT_EQ(got[i], static_cast<unsigned char>(text[i])) << "byte " << i;
      }
      pos += 1 + text.size();
      ++doc;
    }
    EXPECT_EQ(shard->num_tokens(), pos);
    EXPECT_EQ(shard->num_documents(), doc);
    EXPECT_EQ(split == Split::kTrain ? summary->train_tokens : summary->val_tokens, pos);
  }
}

TEST(Prepare, MissingCorpusNamesFetchScript) {
  PrepareOptions options;
  options.data_dir = "/nonexistent_data_dir";
  options.out_dir = std::string(::testing::TempDir()) + "/prepare_missing_" + std::to_string(::getpid());
  options.tokenizer = "byte";
  options.log = nullptr;
  absl::Status status = PrepareCorpus(options);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(status.message().find("launch/fetch_corpus.sh"), std::string::npos) << status;
  EXPECT_NE(status.message().find("/nonexistent_data_dir/books/raw/mobydick.txt"), std::string::npos)
      << status;
}

}  // namespace
}  // namespace nats::data
