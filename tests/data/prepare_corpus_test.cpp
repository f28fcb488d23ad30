// `nats prepare --input`: real files on disk (text, JSONL, gzip, directories, globs) through the whole
// pipeline, read back with TokenCorpus. The byte tokenizer makes every expected token stream computable by
// hand (id = byte, eot = 256); the GPT-2 tests compare the pieced encoding of a whole book with one Encode
// call.
#include "data/prepare_corpus.h"

#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "data/byte_tokenizer.h"
#include "data/loader.h"
#include "data/mix64.h"
#include "data/token_corpus.h"
#include "data/tokenizer.h"
#include "gtest/gtest.h"

namespace nats::data {
namespace {

namespace fs = std::filesystem;

std::string TempDir(const std::string& name) {
  const std::string dir =
      std::string(::testing::TempDir()) + "/prepare_corpus_test_" + std::to_string(::getpid()) + "_" + name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

void WriteFile(const std::string& path, const std::string& bytes) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path, std::ios::binary) << bytes;
}

void WriteGzip(const std::string& path, const std::string& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())), static_cast<int>(bytes.size()));
  gzclose(f);
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string JsonLine(const std::string& text) {
  std::string out = "{\"id\": 1, \"text\": \"";
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out + "\"}\n";
}

CorpusPrepareOptions ByteOptions(std::vector<std::string> inputs, const std::string& out) {
  CorpusPrepareOptions o;
  o.inputs = std::move(inputs);
  o.out_dir = out;
  o.tokenizer = "byte";
  o.threads = 2;
  o.val_fraction = 0;
  o.progress = nullptr;
  return o;
}

// Every token of a split, in order.
std::vector<int32_t> SplitTokens(const std::string& dir) {
  absl::StatusOr<TokenCorpus> corpus = TokenCorpus::Open(dir);
  EXPECT_TRUE(corpus.ok()) << corpus.status();
  if (!corpus.ok()) return {};
  std::vector<int32_t> all(corpus->num_tokens());
  corpus->Read(0, all.size(), all.data());
  return all;
}

// What the byte tokenizer makes of documents: eot, then the bytes, per document.
std::vector<int32_t> ByteStream(const std::vector<std::string>& documents) {
  std::vector<int32_t> out;
  for (const std::string& d : documents) {
    out.push_back(ByteTokenizer::kEotId);
    for (unsigned char c : d) out.push_back(c);
  }
  return out;
}

std::vector<std::string> Documents(int n, uint64_t seed) {
  std::vector<std::string> docs;
  for (int i = 0; i < n; ++i) {
    std::string d;
    const int len = 1 + static_cast<int>(Mix64(seed + i) % 300);
    for (int k = 0; k < len; ++k) d += static_cast<char>('a' + Mix64(seed * 7919 + i * 131 + k) % 26);
    if (i % 5 == 0) d += "\nsecond line";
    docs.push_back(d);
  }
  return docs;
}

TEST(PrepareCorpus, TextJsonlGzipDirectoriesAndGlobsInOrder) {
  const std::string dir = TempDir("mixed");
  WriteFile(dir + "/in/books/b.txt", "beta text\n");
  WriteFile(dir + "/in/books/a.txt", "alpha text\n");
  WriteFile(dir + "/in/books/skip.bin", "not a text file");  // directories contribute known extensions only
  WriteFile(dir + "/in/lines.jsonl", JsonLine("line one") + "\n" + JsonLine("line\ntwo"));
  WriteGzip(dir + "/in/more.jsonl.gz", JsonLine("gzipped"));
  WriteFile(dir + "/in/g1.md", "glob one");
  WriteFile(dir + "/in/g2.md", "glob two");
  CorpusPrepareOptions o =
      ByteOptions({dir + "/in/books", dir + "/in/lines.jsonl", dir + "/in/more.jsonl.gz", dir + "/in/g*.md"},
                  dir + "/out");
  absl::StatusOr<CorpusPrepareSummary> s = PrepareUserCorpus(o);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->files, 6u);
  EXPECT_EQ(s->train.documents, 7u);
  EXPECT_EQ(SplitTokens(dir + "/out/train"), ByteStream({"alpha text\n", "beta text\n", "line one",
                                                         "line\ntwo", "gzipped", "glob one", "glob two"}));
  // The shards carry the tokenizer; the index describes them.
  absl::StatusOr<TokenCorpus> corpus = TokenCorpus::Open(dir + "/out/train");
  ASSERT_TRUE(corpus.ok());
  EXPECT_EQ(corpus->tokenizer(), ByteTokenizer().identity());
  const std::string index = ReadFile(dir + "/out/index.json");
  EXPECT_NE(index.find("\"name\": \"byte\""), std::string::npos) << index;
  EXPECT_NE(index.find("\"documents\": 7"), std::string::npos) << index;
  // Naming the corpus root instead of a split says which to name.
  absl::StatusOr<TokenCorpus> root = TokenCorpus::Open(dir + "/out");
  ASSERT_FALSE(root.ok());
  EXPECT_NE(root.status().message().find("/out/train or "), std::string::npos) << root.status();
}

TEST(PrepareCorpus, SameShardsForAnyThreadCountAndShardSize) {
  const std::string dir = TempDir("threads");
  std::vector<std::string> docs = Documents(3000, 11);
  std::string lines;
  for (const std::string& d : docs) lines += JsonLine(d);
  WriteFile(dir + "/corpus.jsonl", lines);
  std::map<int, std::vector<std::string>> shard_bytes;
  for (int threads : {1, 2, 4}) {
    CorpusPrepareOptions o = ByteOptions({dir + "/corpus.jsonl"}, dir + "/out" + std::to_string(threads));
    o.threads = threads;
    o.val_fraction = 0.2;
    o.shard_tokens = 40000;
    absl::StatusOr<CorpusPrepareSummary> s = PrepareUserCorpus(o);
    ASSERT_TRUE(s.ok()) << s.status();
    ASSERT_GT(s->train.shards.size(), 3u);
    // Every shard but the last holds exactly shard_tokens tokens.
    for (size_t i = 0; i + 1 < s->train.shards.size(); ++i) EXPECT_EQ(s->train.shards[i].tokens, 40000u);
    for (const auto* split : {&s->train, &s->val}) {
      for (const WrittenShard& shard : split->shards) shard_bytes[threads].push_back(ReadFile(shard.path));
    }
  }
  EXPECT_EQ(shard_bytes[1], shard_bytes[2]);
  EXPECT_EQ(shard_bytes[1], shard_bytes[4]);

  // One big shard holds the same stream as the many small ones.
  CorpusPrepareOptions big = ByteOptions({dir + "/corpus.jsonl"}, dir + "/big");
  big.val_fraction = 0.2;
  ASSERT_TRUE(PrepareUserCorpus(big).ok());
  EXPECT_EQ(SplitTokens(dir + "/big/train"), SplitTokens(dir + "/out1/train"));
  EXPECT_EQ(SplitTokens(dir + "/big/val"), SplitTokens(dir + "/out1/val"));
}

TEST(PrepareCorpus, ValidationSplitIsByDocumentTextAndHasTheAskedSize) {
  const std::string dir = TempDir("split");
  std::vector<std::string> docs = Documents(4000, 5);
  std::string forward, backward;
  for (size_t i = 0; i < docs.size(); ++i) {
    forward += JsonLine(docs[i]);
    backward += JsonLine(docs[docs.size() - 1 - i]);
  }
  WriteFile(dir + "/f.jsonl", forward);
  WriteFile(dir + "/b.jsonl", backward);
  std::vector<int32_t> val_tokens[2];
  for (int k = 0; k < 2; ++k) {
    CorpusPrepareOptions o =
        ByteOptions({dir + (k == 0 ? "/f.jsonl" : "/b.jsonl")}, dir + "/out" + std::to_string(k));
    o.val_fraction = 0.1;
    absl::StatusOr<CorpusPrepareSummary> s = PrepareUserCorpus(o);
    ASSERT_TRUE(s.ok()) << s.status();
    // Binomial(4000, 0.1): mean 400, sd 19.
    EXPECT_GT(s->val.documents, 320u);
    EXPECT_LT(s->val.documents, 480u);
    EXPECT_EQ(s->val.documents + s->train.documents, 4000u);
    val_tokens[k] = SplitTokens(dir + "/out" + std::to_string(k) + "/val");
  }
  // The same documents went to validation in both orders: the same multiset of tokens.
  std::sort(val_tokens[0].begin(), val_tokens[0].end());
  std::sort(val_tokens[1].begin(), val_tokens[1].end());
  EXPECT_EQ(val_tokens[0], val_tokens[1]);
}

TEST(PrepareCorpus, JsonlNestedFieldAndBadLines) {
  const std::string dir = TempDir("jsonl");
  WriteFile(dir + "/nested.jsonl",
            "{\"meta\": {\"body\": \"deep text\"}}\n"
            "{\"meta\": {\"title\": \"no body\"}}\n"
            "this is not json\n"
            "{\"meta\": {\"body\": 42}}\n"
            "{\"meta\": {\"body\": \"bad utf8 \xC3\"}}\n"
            "{\"meta\": {\"body\": \"\"}}\n"
            "\n"
            "{\"meta\": {\"body\": \"last\"}}\n");
  CorpusPrepareOptions o = ByteOptions({dir + "/nested.jsonl"}, dir + "/out");
  o.text_field = "meta.body";
  // Without --skip_bad_lines the first bad line stops the run, naming file:line and the field, and leaves
  // nothing.
  absl::StatusOr<CorpusPrepareSummary> stopped = PrepareUserCorpus(o);
  ASSERT_FALSE(stopped.ok());
  EXPECT_NE(stopped.status().message().find("nested.jsonl:2: field \"meta.body\" is missing"),
            std::string::npos)
      << stopped.status();
  EXPECT_NE(stopped.status().message().find("--skip_bad_lines"), std::string::npos);
  EXPECT_FALSE(fs::exists(dir + "/out/train/000000.tok"));
  EXPECT_FALSE(fs::exists(dir + "/out/index.json"));

  o.skip_bad_lines = true;
  absl::StatusOr<CorpusPrepareSummary> s = PrepareUserCorpus(o);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->bad_lines, 4u);  // missing field, not JSON, not a string, invalid UTF-8 (JSON requires UTF-8)
  EXPECT_EQ(s->empty_documents, 1u);
  EXPECT_NE(s->first_bad_line.find("nested.jsonl:2"), std::string::npos) << s->first_bad_line;
  EXPECT_EQ(SplitTokens(dir + "/out/train"), ByteStream({"deep text", "last"}));
  const std::string summary = FormatPrepareSummary(o, *s);
  EXPECT_NE(summary.find("skipped 4 bad lines"), std::string::npos) << summary;
  EXPECT_NE(summary.find("skipped 1 empty documents"), std::string::npos) << summary;
}

TEST(PrepareCorpus, TextKeepsInvalidUtf8BytesAndSkipsEmptyFiles) {
  const std::string dir = TempDir("utf8");
  WriteFile(dir + "/in/a.txt", "caf\xE9 latin-1\n");
  WriteFile(dir + "/in/b.txt", "");
  WriteFile(dir + "/in/c.txt", "fine\n");
  CorpusPrepareOptions o = ByteOptions({dir + "/in"}, dir + "/out");
  absl::StatusOr<CorpusPrepareSummary> s = PrepareUserCorpus(o);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->invalid_utf8_documents, 1u);
  EXPECT_EQ(s->empty_documents, 1u);
  EXPECT_EQ(SplitTokens(dir + "/out/train"), ByteStream({"caf\xE9 latin-1\n", "fine\n"}));
}

TEST(PrepareCorpus, RefusesToMixIntoAnExistingCorpusUnlessOverwrite) {
  const std::string dir = TempDir("overwrite");
  WriteFile(dir + "/one.txt", "first corpus");
  WriteFile(dir + "/two.txt", "second");
  ASSERT_TRUE(PrepareUserCorpus(ByteOptions({dir + "/one.txt"}, dir + "/out")).ok());
  absl::StatusOr<CorpusPrepareSummary> again =
      PrepareUserCorpus(ByteOptions({dir + "/two.txt"}, dir + "/out"));
  ASSERT_FALSE(again.ok());
  EXPECT_NE(again.status().message().find("--overwrite"), std::string::npos) << again.status();
  EXPECT_EQ(SplitTokens(dir + "/out/train"), ByteStream({"first corpus"}));  // untouched
  CorpusPrepareOptions o = ByteOptions({dir + "/two.txt"}, dir + "/out");
  o.overwrite = true;
  ASSERT_TRUE(PrepareUserCorpus(o).ok());
  EXPECT_EQ(SplitTokens(dir + "/out/train"), ByteStream({"second"}));
}

TEST(PrepareCorpus, InputErrorsNameTheInput) {
  const std::string dir = TempDir("errors");
  absl::StatusOr<CorpusPrepareSummary> missing =
      PrepareUserCorpus(ByteOptions({dir + "/nope.txt"}, dir + "/out"));
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("nope.txt"), std::string::npos) << missing.status();
  absl::StatusOr<CorpusPrepareSummary> glob =
      PrepareUserCorpus(ByteOptions({dir + "/*.jsonl"}, dir + "/out"));
  ASSERT_FALSE(glob.ok());
  EXPECT_NE(glob.status().message().find("matches no input files"), std::string::npos) << glob.status();
  // A gzip file cut in half, and one whose deflate data is garbage.
  WriteGzip(dir + "/whole.jsonl.gz", JsonLine(std::string(5000, 'x')) + JsonLine("tail"));
  const std::string whole = ReadFile(dir + "/whole.jsonl.gz");
  WriteFile(dir + "/cut.jsonl.gz", whole.substr(0, whole.size() / 2));
  WriteFile(dir + "/garbage.jsonl.gz", whole.substr(0, 10) + std::string(200, '\x55'));
  for (const char* name : {"cut.jsonl.gz", "garbage.jsonl.gz"}) {
    absl::StatusOr<CorpusPrepareSummary> gz =
        PrepareUserCorpus(ByteOptions({dir + "/" + name}, dir + "/out_" + name));
    ASSERT_FALSE(gz.ok()) << name;
    EXPECT_NE(gz.status().message().find(name), std::string::npos) << gz.status();
  }
}

TEST(DocumentSource, SafeCutsAreAfterANewlineBeforeAPrintableByte) {
  EXPECT_EQ(LastSafeCut("abc"), 0u);
  EXPECT_EQ(LastSafeCut("ab\ncd\n e"), 3u);  // "\n " is not a cut: the space may join the whitespace run
  EXPECT_EQ(LastSafeCut("ab\n\ncd"), 4u);
  EXPECT_EQ(LastSafeCut("ab\n\xC3\xA9"), 0u);  // a non-ASCII letter (or a Unicode space) is not trusted
}

// A book longer than one piece: the pieces' ids concatenate to the ids of one Encode of the whole book.
TEST(PrepareCorpus, LongTextDocumentsInPiecesEncodeLikeTheWholeDocument) {
  const char* data_dir = std::getenv("NATS_CACHE");
  ASSERT_NE(data_dir, nullptr) << "NATS_CACHE is not set (CTest sets it to the download cache)";
  const std::string book = std::string(data_dir) + "/books/raw/mobydick.txt";
  ASSERT_TRUE(fs::exists(book)) << "fetch the demo corpus: launch/fetch_corpus.sh " << data_dir;
  const std::string text = ReadFile(book);
  ASSERT_GT(text.size(), kPieceBytes);  // more than one piece
  const std::string dir = TempDir("pieces");
  const std::string doubled = dir + "/twice.txt";  // > 2 pieces
  WriteFile(doubled, text + text);
  for (const char* name : {"gpt2", "byte"}) {
    absl::StatusOr<std::unique_ptr<Tokenizer>> tok = MakeTokenizer(name, data_dir);
    ASSERT_TRUE(tok.ok()) << tok.status();
    CorpusPrepareOptions o = ByteOptions({doubled}, dir + "/out_" + name);
    o.tokenizer = name;
    o.tokenizer_dir = data_dir;
    absl::StatusOr<CorpusPrepareSummary> s = PrepareUserCorpus(o);
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_EQ(s->train.documents, 1u);
    std::vector<int32_t> expected = {(*tok)->eot_id()};
    std::vector<int32_t> ids = (*tok)->Encode(text + text);
    expected.insert(expected.end(), ids.begin(), ids.end());
    EXPECT_EQ(SplitTokens(dir + "/out_" + name + "/train"), expected) << name;
  }
}

// TokenCorpus: many shards read as one stream; the loader's windows cross shard boundaries exactly as inside
// one.
TEST(TokenCorpus, LoaderOverManyShardsEqualsLoaderOverOne) {
  const std::string dir = TempDir("corpus");
  std::vector<std::vector<int32_t>> docs;
  std::vector<int32_t> flat;
  for (int d = 0; d < 40; ++d) {
    docs.emplace_back();
    for (int k = 0; k < 37 + d; ++k)
      docs.back().push_back((d * 1000 + k) % 300), flat.push_back(docs.back().back());
  }
  ASSERT_TRUE(WriteTokenShard(dir + "/one.tok", 300, docs).ok());
  ShardSetWriter many(dir + "/many", 300, {}, 97);  // 97: shard boundaries fall inside windows and documents
  fs::create_directories(dir + "/many");
  for (const auto& d : docs) {
    many.StartDocument();
    ASSERT_TRUE(many.Append(d).ok());
  }
  ASSERT_TRUE(many.Finish().ok());
  ASSERT_GT(many.shards().size(), 20u);
  auto one = std::make_shared<const TokenCorpus>(*TokenCorpus::Open(dir + "/one.tok"));
  auto split = std::make_shared<const TokenCorpus>(*TokenCorpus::Open(dir + "/many"));
  ASSERT_EQ(split->num_tokens(), flat.size());
  // A shard that begins inside a document records a document start there too.
  std::set<uint64_t> starts;
  for (uint64_t at = 0, d = 0; d < docs.size(); at += docs[d].size(), ++d) starts.insert(at);
  uint64_t continued = 0;
  for (uint64_t at = 97; at < flat.size(); at += 97) continued += starts.count(at) == 0;
  EXPECT_EQ(split->num_documents(), 40u + continued);
  LoaderOptions lo;
  lo.seq_len = 16;
  lo.global_batch = 4;
  lo.dp_size = 2;
  lo.dp_rank = 1;
  lo.seed = 3;
  Loader a = *Loader::Create(one, lo), b = *Loader::Create(split, lo);
  // Two epochs, starting at every step: the cursor alone decides the batch (resume is exact anywhere).
  for (uint64_t consumed = 0; consumed < 2 * a.windows_per_epoch(); consumed += 4) {
    ASSERT_EQ(a.Batch(consumed), b.Batch(consumed)) << "consumed " << consumed;
  }
  EXPECT_EQ(*EvalWindows(*one, 16, 0, 10), *EvalWindows(*split, 16, 0, 10));
  // A glob names the same shards.
  EXPECT_EQ(TokenCorpus::Open(dir + "/many/*.tok")->Fingerprint(), split->Fingerprint());
  EXPECT_NE(one->Fingerprint(), split->Fingerprint());
}

TEST(TokenCorpus, RefusesMixedTokenizersAndModelMismatch) {
  const std::string dir = TempDir("mixed_tok");
  fs::create_directories(dir + "/split");
  ASSERT_TRUE(WriteTokenShard(dir + "/split/000000.tok", 257, {{1, 2, 3}}, ByteTokenizer().identity()).ok());
  ASSERT_TRUE(
      WriteTokenShard(dir + "/split/000001.tok", 50257, {{1, 2, 3}}, *TokenizerIdentityOf("gpt2")).ok());
  absl::StatusOr<TokenCorpus> mixed = TokenCorpus::Open(dir + "/split");
  ASSERT_FALSE(mixed.ok());
  EXPECT_NE(mixed.status().message().find("000001.tok"), std::string::npos) << mixed.status();

  ASSERT_TRUE(WriteTokenShard(dir + "/byte.tok", 257, {{1, 2, 3}}, ByteTokenizer().identity()).ok());
  absl::StatusOr<TokenCorpus> bytes = TokenCorpus::Open(dir + "/byte.tok");
  ASSERT_TRUE(bytes.ok());
  absl::Status refused = CheckCorpusFitsModel(*bytes, "data.train_path", *TokenizerIdentityOf("gpt2"), 50257);
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.message().find("these tokens come from byte"), std::string::npos) << refused;
  EXPECT_NE(refused.message().find("nats prepare --tokenizer gpt2"), std::string::npos) << refused;
  EXPECT_TRUE(CheckCorpusFitsModel(*bytes, "data.train_path", ByteTokenizer().identity(), 257).ok());
  // A shard of unknown tokenizer (written without one, as version 1 shards are) is checked by size only.
  ASSERT_TRUE(WriteTokenShard(dir + "/unknown.tok", 257, {{1, 2, 3}}).ok());
  EXPECT_TRUE(
      CheckCorpusFitsModel(*TokenCorpus::Open(dir + "/unknown.tok"), "f", *TokenizerIdentityOf("gpt2"), 50257)
          .ok());
  EXPECT_FALSE(TokenCorpus::Open(dir + "/nothing/*.tok").ok());
}

}  // namespace
}  // namespace nats::data
