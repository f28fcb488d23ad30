// libFuzzer target: a token shard file (data/token_shard.h) opened by TokenShard::Open and read by the
// loader (data/loader.h), the way `nats train` / `nats eval` read a shard from disk.
//
// Input: [flags byte][seq_len byte][file bytes...]. flags bit 0 asks the target to recompute both CRCs over
// the file (when the header's counts fit it), so the fuzzer also reaches everything behind the checksums:
// a crafted or buggy-writer file with valid CRCs must still never crash a reader. bit 1 opens with
// verify_checksum = false (the loader's path after one verified open).
// Contract checked beyond "no crash": an opened shard's document starts are increasing and inside the
// tokens, and every read the loader makes stays inside the shard (TokenShard::Read CHECKs that itself).
#include <zlib.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "data/loader.h"
#include "data/token_shard.h"
#include "tests/fuzz/fuzz_input.h"

namespace {

using nats::fuzz::FuzzInput;

uint32_t GetU32(const std::string& s, size_t at) {
  uint32_t v;
  std::memcpy(&v, s.data() + at, 4);
  return v;
}
uint64_t GetU64(const std::string& s, size_t at) {
  uint64_t v;
  std::memcpy(&v, s.data() + at, 8);
  return v;
}
void PutU32(std::string& s, size_t at, uint32_t v) { std::memcpy(s.data() + at, &v, 4); }

// Header layout of token_shard.h: version at 8, header size H at 12 (64 in version 1, 128 in version 2),
// width at 20, tokens at 24, docs at 32, payload CRC at 40, header CRC in the last 4 header bytes.
void FixChecksums(std::string& file) {
  if (file.size() < nats::data::kTokenShardHeaderSizeV1) return;
  const uint64_t header = GetU32(file, 8) == 1 ? 64 : 128;
  if (file.size() < header) return;
  const uint64_t width = GetU32(file, 20), tokens = GetU64(file, 24), docs = GetU64(file, 32);
  const uint64_t size = file.size();
  if ((width == 2 || width == 4) && tokens <= size / width && docs <= size / 8) {
    const uint64_t token_bytes = tokens * width;
    const uint64_t offsets_begin = (header + token_bytes + 7) & ~uint64_t{7};
    if (offsets_begin + docs * 8 <= size) {
      uLong crc = crc32(0, nullptr, 0);
      crc = crc32_z(crc, reinterpret_cast<const Bytef*>(file.data() + header), token_bytes);
      crc = crc32_z(crc, reinterpret_cast<const Bytef*>(file.data() + offsets_begin), docs * 8);
      PutU32(file, 40, static_cast<uint32_t>(crc));
    }
  }
  PutU32(file, header - 4,
         static_cast<uint32_t>(
             crc32(crc32(0, nullptr, 0), reinterpret_cast<const Bytef*>(file.data()), header - 4)));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzInput in(data, size);
  const uint8_t flags = in.Byte();
  const int64_t seq_len = in.Byte() % 17;  // 0 is invalid on purpose
  std::string file(in.Rest());
  if (flags & 1) FixChecksums(file);
  const std::string path = nats::fuzz::ScratchDir() + "/shard.tok";
  nats::fuzz::WriteFileOrDie(path, file);

  nats::data::TokenShard::OpenOptions options;
  options.verify_checksum = (flags & 2) == 0;
  auto opened = nats::data::TokenShard::Open(path, options);
  if (!opened.ok()) return 0;
  std::vector<nats::data::TokenShard> one;
  one.push_back(*std::move(opened));
  auto made = nats::data::TokenCorpus::FromShards(path, std::move(one));
  FUZZ_CHECK(made.ok());
  auto corpus = std::make_shared<const nats::data::TokenCorpus>(*std::move(made));
  const nats::data::TokenShard* shard = &corpus->shard(0);
  (void)shard->Verify();

  // Open's promises.
  const auto starts = shard->document_starts();
  FUZZ_CHECK(starts.size() == shard->num_documents());
  for (size_t d = 0; d < starts.size(); ++d) {
    FUZZ_CHECK(starts[d] < shard->num_tokens());
    FUZZ_CHECK(d == 0 ? starts[d] == 0 : starts[d] > starts[d - 1]);
  }
  int64_t sum = 0;
  for (uint64_t i = 0; i < shard->num_tokens(); ++i) sum += shard->token(i);

  // The readers of `nats eval` and `nats train`.
  const uint64_t windows = nats::data::NumWindows(shard->num_tokens(), seq_len);
  auto rows = nats::data::EvalWindows(*corpus, seq_len, 0, windows);
  if (rows.ok()) FUZZ_CHECK(rows->size() == windows * static_cast<uint64_t>(seq_len + 1));
  (void)nats::data::EvalWindows(*corpus, seq_len, windows, 1);  // past the end: OutOfRange
  nats::data::LoaderOptions lo;
  lo.seq_len = seq_len;
  lo.global_batch = 1 + (flags >> 4);
  lo.dp_size = 1 + ((flags >> 2) & 1);
  lo.dp_rank = lo.dp_size - 1;
  lo.seed = sum;
  auto loader = nats::data::Loader::Create(corpus, lo);
  if (loader.ok()) {
    for (uint64_t consumed : {uint64_t{0}, uint64_t{7}, uint64_t{1} << 40}) {
      const std::vector<int32_t> batch = loader->Batch(consumed);
      FUZZ_CHECK(batch.size() == static_cast<size_t>(loader->local_batch() * loader->row_length()));
    }
  }
  return 0;
}
