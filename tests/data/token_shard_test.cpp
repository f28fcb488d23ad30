// Token shard: round trips in both token widths, and every kind of damaged file gives an error naming it.
#include "data/token_shard.h"

#include <unistd.h>

#include <cstdint>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace nats::data {
namespace {

std::string TempPath(const std::string& name) {
  return std::string(::testing::TempDir()) + "/shard_test_" + std::to_string(::getpid()) + "_" + name;
}

std::vector<std::vector<int32_t>> RandomDocuments(int64_t vocab, int num_docs, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::vector<int32_t>> docs(num_docs);
  for (auto& doc : docs) {
    doc.resize(1 + rng() % 1000);
    for (auto& t : doc) t = static_cast<int32_t>(rng() % vocab);
  }
  // Pin the extremes: id 0 and the largest id must survive the narrow encoding.
  docs[0][0] = 0;
  docs.back().back() = static_cast<int32_t>(vocab - 1);
  return docs;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

void ExpectRoundTrip(int64_t vocab, int expected_width) {
  const std::string path = TempPath("roundtrip_" + std::to_string(vocab) + ".tok");
  auto docs = RandomDocuments(vocab, 17, static_cast<uint32_t>(vocab));
  ASSERT_TRUE(WriteTokenShard(path, vocab, docs).ok());

  absl::StatusOr<TokenShard> shard = TokenShard::Open(path);
  ASSERT_TRUE(shard.ok()) << shard.status();
  EXPECT_EQ(shard->vocab_size(), vocab);
  EXPECT_EQ(shard->token_width(), expected_width);
  ASSERT_EQ(shard->num_documents(), docs.size());

  std::vector<int32_t> flat;
  for (size_t d = 0; d < docs.size(); ++d) {
    EXPECT_EQ(shard->document_starts()[d], flat.size()) << "document " << d;
    flat.insert(flat.end(), docs[d].begin(), docs[d].end());
  }
  ASSERT_EQ(shard->num_tokens(), flat.size());
  for (uint64_t i = 0; i < flat.size(); ++i) ASSERT_EQ(shard->token(i), flat[i]) << "token " << i;
  std::vector<int32_t> all(flat.size());
  shard->Read(0, all.size(), all.data());
  EXPECT_EQ(all, flat);
  std::vector<int32_t> part(5);
  shard->Read(flat.size() - 5, 5, part.data());
  EXPECT_EQ(part, std::vector<int32_t>(flat.end() - 5, flat.end()));
  EXPECT_TRUE(shard->Verify().ok());

  // Byte size: header + tokens, padded to 8, + offsets. Catches a width that silently became 4.
  uint64_t token_end = kTokenShardHeaderSize + flat.size() * expected_width;
  EXPECT_EQ(ReadFile(path).size(), ((token_end + 7) / 8) * 8 + docs.size() * 8);
}

TEST(TokenShard, RoundTripUint16) { ExpectRoundTrip(50257, 2); }
TEST(TokenShard, RoundTripUint16AtTheEdge) { ExpectRoundTrip(65536, 2); }
TEST(TokenShard, RoundTripUint32) { ExpectRoundTrip(100277, 4); }
TEST(TokenShard, RoundTripByteVocab) { ExpectRoundTrip(257, 2); }

TEST(TokenShard, WidthForVocab) {
  EXPECT_EQ(TokenWidthForVocab(257), 2);
  EXPECT_EQ(TokenWidthForVocab(65536), 2);
  EXPECT_EQ(TokenWidthForVocab(65537), 4);
}

TEST(TokenShard, LargeDocumentCrossesWriterBuffer) {
  // > 1 MiB of tokens so the writer flushes mid-document and the checksum spans several pieces.
  const std::string path = TempPath("large.tok");
  std::vector<std::vector<int32_t>> docs(2, std::vector<int32_t>(700000));
  for (size_t i = 0; i < docs[0].size(); ++i) docs[0][i] = static_cast<int32_t>(i % 50257);
  for (size_t i = 0; i < docs[1].size(); ++i) docs[1][i] = static_cast<int32_t>((i * 7) % 50257);
  ASSERT_TRUE(WriteTokenShard(path, 50257, docs).ok());
  absl::StatusOr<TokenShard> shard = TokenShard::Open(path);
  ASSERT_TRUE(shard.ok()) << shard.status();
  EXPECT_EQ(shard->num_tokens(), 1400000u);
  EXPECT_EQ(shard->token(699999), 699999 % 50257);
  EXPECT_EQ(shard->token(700000 + 12345), (12345 * 7) % 50257);
}

TEST(TokenShard, RejectsOutOfVocabularyAndEmptyDocuments) {
  const std::string path = TempPath("bad_ids.tok");
  EXPECT_FALSE(WriteTokenShard(path, 100, {{1, 2, 100}}).ok());
  EXPECT_FALSE(WriteTokenShard(path, 100, {{1, -1}}).ok());
  EXPECT_FALSE(WriteTokenShard(path, 100, {{1}, {}}).ok());
  // A failed write leaves nothing behind at the path (nothing is visible before Finish).
  EXPECT_NE(::access(path.c_str(), F_OK), 0);
}

TEST(TokenShard, UnfinishedWriterLeavesNothing) {
  const std::string path = TempPath("unfinished.tok");
  {
    absl::StatusOr<TokenShardWriter> writer = TokenShardWriter::Create(path, 300);
    ASSERT_TRUE(writer.ok());
    ASSERT_TRUE(writer->AddDocument({1, 2, 3}).ok());
  }
  EXPECT_NE(::access(path.c_str(), F_OK), 0);
  EXPECT_NE(::access((path + ".tmp." + std::to_string(::getpid())).c_str(), F_OK), 0);
}

// A valid shard's bytes, for the corruption tests.
std::string ValidShardBytes(const std::string& path) {
  auto docs = RandomDocuments(50257, 3, 7);
  EXPECT_TRUE(WriteTokenShard(path, 50257, docs).ok());
  return ReadFile(path);
}

void ExpectErrorNamingFile(const std::string& path, absl::StatusCode code, const std::string& needle) {
  absl::StatusOr<TokenShard> shard = TokenShard::Open(path);
  ASSERT_FALSE(shard.ok()) << "opened a damaged shard: " << path;
  EXPECT_EQ(shard.status().code(), code) << shard.status();
  EXPECT_NE(shard.status().message().find(path), std::string::npos) << shard.status();
  EXPECT_NE(shard.status().message().find(needle), std::string::npos) << shard.status();
}

TEST(TokenShard, MissingFile) {
  ExpectErrorNamingFile(TempPath("does_not_exist.tok"), absl::StatusCode::kNotFound, "nats prepare");
}

TEST(TokenShard, TruncatedFile) {
  const std::string path = TempPath("truncated.tok");
  std::string bytes = ValidShardBytes(path);
  WriteFile(path, bytes.substr(0, bytes.size() - 9));
  ExpectErrorNamingFile(path, absl::StatusCode::kDataLoss, "truncated");
  WriteFile(path, bytes.substr(0, 20));  // shorter than the header
  ExpectErrorNamingFile(path, absl::StatusCode::kDataLoss, "truncated");
  WriteFile(path, bytes + "x");  // trailing garbage is damage too
  ExpectErrorNamingFile(path, absl::StatusCode::kDataLoss, "trailing");
}

TEST(TokenShard, WrongMagic) {
  const std::string path = TempPath("magic.tok");
  std::string bytes = ValidShardBytes(path);
  bytes[0] = 'X';
  WriteFile(path, bytes);
  ExpectErrorNamingFile(path, absl::StatusCode::kDataLoss, "bad magic");
}

TEST(TokenShard, CorruptHeaderField) {
  const std::string path = TempPath("header.tok");
  std::string bytes = ValidShardBytes(path);
  bytes[24] ^= 1;  // token count
  WriteFile(path, bytes);
  ExpectErrorNamingFile(path, absl::StatusCode::kDataLoss, "header");
}

TEST(TokenShard, BadChecksum) {
  const std::string path = TempPath("checksum.tok");
  std::string bytes = ValidShardBytes(path);
  bytes[kTokenShardHeaderSize + 3] ^= 0x10;  // one token bit
  WriteFile(path, bytes);
  ExpectErrorNamingFile(path, absl::StatusCode::kDataLoss, "checksum");

  // Skipping verification on open still leaves Verify() to catch it.
  TokenShard::OpenOptions fast;
  fast.verify_checksum = false;
  absl::StatusOr<TokenShard> shard = TokenShard::Open(path, fast);
  ASSERT_TRUE(shard.ok()) << shard.status();
  absl::Status verified = shard->Verify();
  EXPECT_EQ(verified.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(verified.message().find(path), std::string::npos) << verified;
}

TEST(TokenShard, RewriteReplacesAtomically) {
  const std::string path = TempPath("rewrite.tok");
  ASSERT_TRUE(WriteTokenShard(path, 300, {{1, 2, 3}}).ok());
  absl::StatusOr<TokenShard> before = TokenShard::Open(path);
  ASSERT_TRUE(before.ok());
  ASSERT_TRUE(WriteTokenShard(path, 300, {{4, 5}, {6}}).ok());
  // The old mapping still reads the old file (rename replaced the directory entry, not the bytes).
  EXPECT_EQ(before->token(2), 3);
  absl::StatusOr<TokenShard> after = TokenShard::Open(path);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->num_tokens(), 3u);
  EXPECT_EQ(after->num_documents(), 2u);
  EXPECT_EQ(after->token(2), 6);
}

}  // namespace
}  // namespace nats::data
