// libFuzzer target: the input side of `nats prepare --input` (data/document_source.h) on arbitrary files: the
// streaming reader over zlib (plain or gzip), JSONL line splitting, the JSON field extraction, and the piece
// cutter for long text documents.
//
// Input: [mode byte][rest]. mode bit 0: rest is JSONL (else text); bit 1: gzip-compress rest before writing
// it; bit 2: read the field "meta.text" (else "text"). Contracts checked beyond "no crash": for plain text
// the pieces concatenate to the file exactly, every piece but the first continues its document, and a cut
// lies after '\n' before printable non-space ASCII (or at kMaxPieceBytes); for JSONL every returned line is
// non-blank and contains no '\n'.
#include <zlib.h>

#include <cstdint>
#include <string>
#include <vector>

#include "data/document_source.h"
#include "tests/fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  nats::fuzz::FuzzInput in(data, size);
  const uint8_t mode = in.Byte();
  const std::string rest(in.Rest());
  const bool jsonl = (mode & 1) != 0, gzip = (mode & 2) != 0;
  const std::string path = nats::fuzz::ScratchDir() + (jsonl ? "/in.jsonl" : "/in.txt") + (gzip ? ".gz" : "");
  if (gzip) {
    gzFile f = gzopen(path.c_str(), "wb");
    FUZZ_CHECK(f != nullptr);
    if (!rest.empty()) gzwrite(f, rest.data(), static_cast<unsigned>(rest.size()));
    gzclose(f);
  } else {
    nats::fuzz::WriteFileOrDie(path, rest);
  }
  auto files = nats::data::ExpandInputs({path}, nats::data::InputFormat::kAuto);
  FUZZ_CHECK(files.ok() && files->size() == 1);
  nats::data::DocumentReader reader(*files);
  std::string joined;
  int pieces = 0;
  size_t last_piece = 0;
  nats::data::RawDocument doc;
  while (true) {
    auto got = reader.Next(&doc);
    if (!got.ok() || !*got) break;
    if (jsonl) {
      FUZZ_CHECK(doc.jsonl && doc.bytes.find('\n') == std::string::npos);
      FUZZ_CHECK(doc.bytes.find_first_not_of(" \t") != std::string::npos);
      (void)nats::data::ExtractJsonText(doc.bytes, (mode & 4) ? "meta.text" : "text");
    } else {
      FUZZ_CHECK(doc.continues == (pieces > 0));
      if (pieces > 0 && !doc.bytes.empty() && last_piece != nats::data::kMaxPieceBytes) {
        const auto c = static_cast<unsigned char>(doc.bytes[0]);
        FUZZ_CHECK(joined.back() == '\n' && c > 0x20 && c < 0x7F);
      }
      joined += doc.bytes;
      last_piece = doc.bytes.size();
      ++pieces;
    }
  }
  if (!jsonl) FUZZ_CHECK(joined == rest);
  return 0;
}
