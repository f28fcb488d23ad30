// fuzz_seeds OUT_DIR: writes small valid inputs for every target of tests/fuzz/ into OUT_DIR/<target>/, made
// with the project's own writers (TokenShardWriter, BlobWriter, WriteManifest, the configs/ files), so the
// seeds follow the file formats when they change. run_fuzz.sh and CTest (fixture fuzz_seeds) call it before
// fuzzing; checked-in inputs (earlier crashes) live in tests/fuzz/corpus/<target>/.
#include <zlib.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "checkpoints/blob_file.h"
#include "checkpoints/checkpoint_dir.h"
#include "checkpoints/crc32c.h"
#include "data/token_shard.h"

namespace {

namespace fs = std::filesystem;
namespace ck = nats::checkpoint;

std::string g_out;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "fuzz_seeds: cannot read %s\n", path.c_str());
    std::exit(1);
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

void Seed(const std::string& target, const std::string& name, const std::string& bytes) {
  const std::string dir = g_out + "/" + target;
  fs::create_directories(dir);
  std::ofstream out(dir + "/" + name, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) {
    std::fprintf(stderr, "fuzz_seeds: cannot write %s/%s\n", dir.c_str(), name.c_str());
    std::exit(1);
  }
}

std::string U32(uint32_t v) { return std::string(reinterpret_cast<const char*>(&v), 4); }
std::string Be32(uint32_t v) {
  return std::string{static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
                     static_cast<char>(v)};
}
std::string Piece(const std::string& bytes) { return U32(static_cast<uint32_t>(bytes.size())) + bytes; }

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_seeds: %s failed\n", what);
    std::exit(1);
  }
}

void TokenShardSeeds(const std::string& scratch) {
  const std::string path = scratch + "/seed.tok";
  struct Case {
    const char* name;
    int64_t vocab;
    std::vector<std::vector<int32_t>> docs;
  };
  const std::vector<Case> cases = {
      {"small_u16", 300, {{1, 2, 3, 4, 5, 6, 7}, {299, 0, 42, 17, 5}, {8, 9}}},
      {"gpt2_vocab", 50257, {{464, 3290, 286, 50256, 198, 11, 13, 262, 290, 257, 284}}},
      {"u32_tokens", 70000, {{69999, 1, 65536, 2, 3}, {4, 5, 6, 7, 8, 9, 10}}},
      {"no_documents", 10, {}},
  };
  for (const Case& c : cases) {
    Check(nats::data::WriteTokenShard(path, c.vocab, c.docs).ok(), "WriteTokenShard");
    const std::string file = ReadFile(path);
    for (uint8_t flags : {0, 1, 2}) {
      Seed("token_shard", std::string(c.name) + "_f" + std::to_string(flags),
           std::string{static_cast<char>(flags), static_cast<char>(4)} + file);
    }
  }
}

void ConfigSeeds() {
  for (const char* name : {"tiny", "tiny_nats", "small_byte_nats", "gpt2_124m"}) {
    Seed("config", name,
         std::string(1, '\0') + ReadFile(std::string(NATS_SOURCE_DIR) + "/configs/" + name + ".textproto"));
  }
  Seed("config", "overrides",
       std::string(1, '\1') +
           "model.n_layer=2\nmodel.attention=NATS\nnats.layers=[0,1]\nnats.window=16\noptim.lr=3e-4\n"
           "train.run_dir=runs/x\ndata.tokenizer=byte\nmodel.vocab_size=512\nparallel.timeout_s=5");
  Seed("config", "bad_override", std::string(1, '\1') + "model.d_model=\nmodel.norm=RMS_NORM\nmodel=1");
}

void TokenizerSeeds() {
  const std::string text =
      "Call me Ishmael. Some years ago\xe2\x80\x94never mind how long precisely\xe2\x80\x94 having 1234 "
      "dollars, I'd   go   \t\n\n  it's <|endoftext|> caf\xc3\xa9 \xf0\x9f\x90\x8b \xff\xfe bad utf8 \xc3";
  Seed("gpt2_tokenizer", "encode", std::string(1, '\0') + text);
  std::string ids;
  for (int32_t id : {31373, 995, 50256, 0, 50255, 198}) ids += U32(static_cast<uint32_t>(id));
  Seed("gpt2_tokenizer", "decode", std::string(1, '\1') + ids);
  Seed("gpt2_tokenizer", "decode_bad", std::string(1, '\1') + ids + U32(50257) + U32(0xFFFFFFFFu));
  Seed("gpt2_tokenizer", "byte", std::string(1, '\2') + text);
  Seed("gpt2_tokenizer", "ranks", std::string(1, '\3') + "IQ== 0\nIg== 1\n");
}

std::string XdrStrings(const std::vector<std::string>& lines, bool latin1, int version) {
  std::string x = "X\n" + Be32(version) + Be32(0x040200) + Be32(0x020300);
  if (version == 3) x += Be32(5) + "UTF-8";
  x += Be32(16) + Be32(static_cast<uint32_t>(lines.size()));
  for (const std::string& line : lines) {
    x += Be32(9 | (latin1 ? (1u << 2) << 12 : 0)) + Be32(static_cast<uint32_t>(line.size())) + line;
  }
  x += Be32(9) + Be32(0xFFFFFFFFu);  // trailing NA is not part of the vector: garbage the decoder ignores
  return x;
}

std::string Frame(const std::string& payload) {
  uLongf n = compressBound(payload.size());
  std::string z(n, '\0');
  Check(compress(reinterpret_cast<Bytef*>(z.data()), &n, reinterpret_cast<const Bytef*>(payload.data()),
                 payload.size()) == Z_OK,
        "compress");
  z.resize(n);
  return Be32(static_cast<uint32_t>(payload.size())) + z;
}

void CorpusSeeds() {
  const std::string a = XdrStrings({"PERSUASION", "", "by Jane Austen", "Chapter 1"}, false, 3);
  const std::string b = XdrStrings({"EMMA", "caf\xe9", "na\xefve"}, true, 2);
  Seed("corpus", "rdb_two_records", std::string(1, '\0') + Frame(a) + Frame(b));
  Seed("corpus", "xdr_v3", std::string(1, '\1') + a);
  Seed("corpus", "xdr_v2_latin1", std::string(1, '\1') + b);
  const std::string book =
      "\xef\xbb\xbfThe Project Gutenberg EBook of Moby Dick\r\n\r\n*** START OF THIS PROJECT GUTENBERG EBOOK "
      "MOBY "
      "DICK ***\r\n\r\nCall me Ishmael.\r\nIt is a way I have.\r\n\r\n*** END OF THIS PROJECT GUTENBERG "
      "EBOOK ***\r\n"
      "End of the Project Gutenberg EBook\r\n";
  Seed("corpus", "gutenberg", std::string(1, '\2') + book);
  Seed("corpus", "kjv",
       std::string(1, static_cast<char>(2 + 16 * 3)) +
           "Ge1:1 In the beginning God created the heaven and the earth.\nGe1:2 And the earth\n"
           "Ex1:1 Now these are the names\n1Cor13:4 Charity suffereth long\n");
  Seed("corpus", "cp1252",
       std::string(1, '\2') +
           "The Gold\x96"
           "Bug \x86\x87 c\x9cur \x93quoted\x94\n");
}

// A two-rank checkpoint of three tensors (one split over both blobs), as a save writes it.
void CheckpointSeeds(const std::string& scratch) {
  const std::string dir = scratch + "/ckpt_seed";
  fs::remove_all(dir);
  fs::create_directories(dir);
  constexpr int64_t kStep = 7;  // checkpoint_fuzz writes step_00000007
  ck::Manifest m;
  m.set_format_version(ck::kFormatVersion);
  m.set_step(kStep);
  m.set_consumed_samples(56);
  m.set_world_size(2);
  m.set_dp(2);
  m.set_sp(1);
  m.mutable_config()->mutable_model()->set_n_layer(1);
  auto* point = m.add_history();
  point->set_step(kStep);
  point->set_loss(5.5);
  std::vector<float> w(12);
  for (size_t i = 0; i < w.size(); ++i) w[i] = 0.25f * static_cast<float>(i);
  const std::vector<int64_t> steps_t = {7, 8};
  const std::vector<uint8_t> bytes_t = {1, 2, 3};
  std::string payload[2];  // what follows each blob's header, for the fix-up form
  std::unique_ptr<ck::BlobWriter> writers[2];
  for (int r = 0; r < 2; ++r) {
    auto writer = ck::BlobWriter::Create(dir, r, kStep);
    Check(writer.ok(), "BlobWriter::Create");
    writers[r] = std::move(*writer);
    m.add_rank_states()->set_rank(r);
  }
  auto add = [&](const std::string& name, ck::DType dtype, std::vector<int64_t> shape,
                 std::vector<std::pair<int, std::pair<const void*, uint64_t>>> parts, uint64_t element) {
    ck::TensorEntry* t = m.add_tensors();
    t->set_name(name);
    t->set_dtype(dtype);
    for (int64_t d : shape) t->add_shape(d);
    uint64_t offset = 0;
    for (auto& [rank, piece] : parts) {
      auto slice = writers[rank]->Append(piece.first, piece.second);
      Check(slice.ok(), "BlobWriter::Append");
      slice->set_global_offset(offset);
      slice->set_numel(piece.second / element);
      offset += piece.second / element;
      *t->add_slices() = *slice;
      // The fix-up form's payload: the same bytes at the same offsets after the header.
      const uint64_t at = slice->file_offset() - ck::kBlobHeaderBytes;
      if (payload[rank].size() < at) payload[rank].resize(at, '\0');
      payload[rank].append(static_cast<const char*>(piece.first), piece.second);
    }
  };
  add("model/wte", ck::FLOAT32, {3, 4}, {{0, {w.data(), 24}}, {1, {w.data() + 6, 24}}}, 4);
  add("optim/step", ck::INT64, {2}, {{1, {steps_t.data(), 16}}}, 8);
  add("model/mask", ck::UINT8, {3}, {{0, {bytes_t.data(), 3}}}, 1);
  for (int r = 0; r < 2; ++r) {
    auto size = writers[r]->Finish();
    Check(size.ok(), "BlobWriter::Finish");
    ck::BlobFile* b = m.add_blobs();
    b->set_rank(r);
    b->set_file(ck::BlobFileName(r));
    b->set_bytes(*size);
  }
  Check(ck::WriteManifest(dir, m).ok(), "WriteManifest");
  const std::string manifest_file = ReadFile(dir + "/" + ck::kManifestFileName);
  const std::string blob0 = ReadFile(dir + "/rank_0.bin"), blob1 = ReadFile(dir + "/rank_1.bin");
  const std::string latest = "step_00000007\n";
  Seed("checkpoint", "raw",
       std::string(1, '\0') + Piece(manifest_file) + Piece(blob0) + Piece(blob1) + latest);
  Seed("checkpoint", "raw_bare_manifest",
       std::string(1, '\0') + Piece(m.SerializeAsString()) + Piece(blob0) + Piece(blob1) + latest);
  Seed("checkpoint", "fixup",
       std::string(1, '\1') + Piece(m.SerializeAsString()) + Piece(payload[0]) + Piece(payload[1]) + latest);
  Seed("checkpoint", "raw_truncated_blob",
       std::string(1, '\0') + Piece(manifest_file) + Piece(blob0.substr(0, 100)) + Piece(blob1) + "garbage");
}

}  // namespace

// `nats prepare --input` files: JSONL (nested field, bad lines, blank lines, CRLF), text, each also gzipped.
void PrepareInputSeeds() {
  const std::string jsonl =
      "{\"text\": \"one\", \"meta\": {\"text\": \"nested\"}}\r\n\n  \n{\"text\": 5}\nnot json\n"
      "{\"text\": \"caf\\u00e9 \\n line\"}";
  const std::string text = "Chapter 1\n\nCall me Ishmael.\n  indented\nCAPS\n\xc3\xa9\n";
  Seed("prepare_input", "jsonl", std::string(1, '\1') + jsonl);
  Seed("prepare_input", "jsonl_nested_gz", std::string(1, '\7') + jsonl);
  Seed("prepare_input", "text", std::string(1, '\0') + text);
  Seed("prepare_input", "text_gz", std::string(1, '\2') + text);
}

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: fuzz_seeds OUT_DIR\n");
    return 2;
  }
  g_out = argv[1];
  const std::string scratch = g_out + "/.scratch";
  fs::create_directories(scratch);
  TokenShardSeeds(scratch);
  ConfigSeeds();
  TokenizerSeeds();
  CorpusSeeds();
  CheckpointSeeds(scratch);
  PrepareInputSeeds();
  fs::remove_all(scratch);
  std::printf("fuzz_seeds: wrote seeds for 6 targets to %s\n", g_out.c_str());
  return 0;
}
