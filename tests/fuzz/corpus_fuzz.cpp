// libFuzzer target: the raw-book readers of `nats prepare` (data/corpus.h): the R database decoder
// (DecodeRCharacterVectors, zlib + XDR) and the cleaning steps, on arbitrary bytes.
//
// Input: [mode byte][rest]. Mode % 3:
//   0: rest is an .rdb file as is;
//   1: rest is one record's uncompressed XDR payload; the target frames it as the decoder expects
//      ([uint32 big-endian size][zlib stream]) so the fuzzer reaches the XDR parser behind zlib;
//   2: rest is a raw book for CleanBookText (mode bit 4: the KJV verse-reference stripping).
// Contracts checked beyond "no crash": ToUtf8 and CleanBookText of valid UTF-8 return valid UTF-8, and the
// cleaned text is empty or ends in exactly one newline.
#include <zlib.h>

#include <cstdint>
#include <string>

#include "data/corpus.h"
#include "data/utf8.h"
#include "tests/fuzz/fuzz_input.h"

namespace {

std::string FrameRecord(std::string_view payload) {
  uLongf bound = compressBound(payload.size());
  std::string out(4 + bound, '\0');
  const auto n = static_cast<uint32_t>(payload.size());
  out[0] = static_cast<char>(n >> 24);
  out[1] = static_cast<char>(n >> 16);
  out[2] = static_cast<char>(n >> 8);
  out[3] = static_cast<char>(n);
  if (compress(reinterpret_cast<Bytef*>(out.data() + 4), &bound,
               reinterpret_cast<const Bytef*>(payload.data()), payload.size()) != Z_OK) {
    std::abort();
  }
  out.resize(4 + bound);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  nats::fuzz::FuzzInput in(data, size);
  const uint8_t mode = in.Byte();
  const std::string_view rest = in.Rest();
  switch (mode % 3) {
    case 0:
      (void)nats::data::DecodeRCharacterVectors(rest, "fuzz.rdb");
      break;
    case 1: {
      auto records = nats::data::DecodeRCharacterVectors(FrameRecord(rest), "fuzz.rdb");
      if (records.ok()) FUZZ_CHECK(records->size() == 1);
      break;
    }
    case 2: {
      const std::string utf8 = nats::data::ToUtf8(rest);
      FUZZ_CHECK(nats::data::IsValidUtf8(utf8));
      nats::data::CleanOptions options;
      options.strip_verse_references = (mode & 16) != 0;
      const std::string clean = nats::data::CleanBookText(rest, options);
      FUZZ_CHECK(nats::data::IsValidUtf8(clean));
      FUZZ_CHECK(clean.empty() ||
                 (clean.back() == '\n' && (clean.size() < 2 || clean[clean.size() - 2] != '\n')));
      (void)nats::data::StripGutenbergBoilerplate(utf8);
      (void)nats::data::NormalizeNewlines(rest);
      break;
    }
  }
  return 0;
}
