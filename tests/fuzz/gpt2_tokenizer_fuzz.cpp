// libFuzzer target: the tokenizers (data/tokenizer.h) on arbitrary bytes, as `nats tokenize`, `nats prepare`
// and `nats generate --prompt` feed them, and Decode on arbitrary ids (ids from a damaged shard or a model
// with another vocabulary).
//
// Input: [mode byte][rest]. Mode % 4:
//   0: rest is text for Gpt2Tokenizer::Encode; checks Decode(Encode(x)) == x and every id < vocab_size
//      (the header's contract for any byte string), and, for short pieces, that the heap BPE equals
//      tiktoken's quadratic loop (EncodePieceReference);
//   1: rest is int32 ids (any values) for Gpt2Tokenizer::Decode: a Status, never a crash;
//   2: the same two checks for ByteTokenizer;
//   3: rest is a ranks file for Gpt2Tokenizer::Load (refused by its SHA-256 unless it is the real file),
//      and the rest's first bytes as a tokenizer name for MakeTokenizer.
// Needs <NATS_CACHE or source/.cache>/tokenizer/r50k_base.tiktoken (launch/fetch_tokenizer.sh).
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "data/byte_tokenizer.h"
#include "data/gpt2_tokenizer.h"
#include "tests/fuzz/fuzz_input.h"

namespace {

const nats::data::Gpt2Tokenizer* g_gpt2 = nullptr;

std::vector<int32_t> AsIds(std::string_view bytes) {
  std::vector<int32_t> ids(bytes.size() / 4);
  if (!ids.empty()) std::memcpy(ids.data(), bytes.data(), ids.size() * 4);
  return ids;
}

void CheckRoundTrip(const nats::data::Tokenizer& tokenizer, std::string_view text) {
  const std::vector<int32_t> ids = tokenizer.Encode(text);
  for (int32_t id : ids) FUZZ_CHECK(id >= 0 && id < tokenizer.vocab_size());
  auto decoded = tokenizer.Decode(ids);
  FUZZ_CHECK(decoded.ok());
  FUZZ_CHECK(*decoded == text);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const std::string path = nats::fuzz::DataDir() + "/tokenizer/r50k_base.tiktoken";
  auto loaded = nats::data::Gpt2Tokenizer::Load(path);
  if (!loaded.ok()) {
    std::fprintf(stderr, "gpt2_tokenizer_fuzz: %s\n", std::string(loaded.status().message()).c_str());
    std::abort();
  }
  g_gpt2 = loaded->release();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  nats::fuzz::FuzzInput in(data, size);
  const uint8_t mode = in.Byte() % 4;
  const std::string_view rest = in.Rest();
  static const nats::data::ByteTokenizer byte_tokenizer;
  switch (mode) {
    case 0: {
      CheckRoundTrip(*g_gpt2, rest);
      std::string joined;
      for (std::string_view piece : g_gpt2->SplitPieces(rest)) {
        joined.append(piece);
        if (piece.size() <= 64) FUZZ_CHECK(g_gpt2->EncodePiece(piece) == g_gpt2->EncodePieceReference(piece));
      }
      FUZZ_CHECK(joined == rest);
      break;
    }
    case 1: {
      const std::vector<int32_t> ids = AsIds(rest);
      auto text = g_gpt2->Decode(ids);
      bool in_range = true;
      for (int32_t id : ids) in_range = in_range && id >= 0 && id < g_gpt2->vocab_size();
      FUZZ_CHECK(text.ok() == in_range);
      break;
    }
    case 2: {
      CheckRoundTrip(byte_tokenizer, rest);
      (void)byte_tokenizer.Decode(AsIds(rest));
      break;
    }
    case 3: {
      const std::string path = nats::fuzz::ScratchDir() + "/ranks.tiktoken";
      nats::fuzz::WriteFileOrDie(path, rest);
      (void)nats::data::Gpt2Tokenizer::Load(path);
      (void)nats::data::MakeTokenizer(rest.substr(0, 8), nats::fuzz::ScratchDir());
      break;
    }
  }
  return 0;
}
