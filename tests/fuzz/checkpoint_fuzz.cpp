// libFuzzer target: a checkpoint directory as `nats train --resume`, `nats eval`, `nats generate` and
// `nats inspect` read it (checkpoints/checkpoint_dir.h, checkpoint_reader.h, blob_file.h), through the public
// read functions only, so it keeps working when the file formats change (e.g. the manifest frame and
// checksum of manifest_file.h).
//
// Input: [flags][u32 n][n manifest bytes][u32 n][n bytes of rank_0.bin][u32 n][n bytes of
// rank_1.bin][latest]. The target writes <scratch>/ckpt/step_00000007/{manifest.pb, rank_0.bin, rank_1.bin}
// and <scratch>/ckpt/latest.
//   flags bit 0 clear: every file is written exactly as given (damaged frames, truncated blobs, garbage).
//   flags bit 0 set:   the manifest bytes are parsed as a Manifest protobuf and written with WriteManifest (a
//                      valid frame and checksum), the blob bytes become the payload after a valid blob header
//                      (BlobWriter), and each listed blob's size and each in-range slice's CRC-32C are set to
//                      the truth, so the fuzzer reaches the checks behind the checksums (a buggy or hostile
//                      writer).
// Then: ResolveCheckpointPath, ReadManifest, FindLatestCheckpoint, ReadLatest, CheckpointReader::Open and,
// for every tensor of at most 64 Ki elements, Read (verified and not, whole and in part), VerifySlice and
// CheckCompatible, and `nats inspect --slices` on the directory. Nothing may crash; errors are Status.
// Only the one operator used: <ATen/ATen.h> would double this file's build time under ASan.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "checkpoints/blob_file.h"
#include "checkpoints/checkpoint_dir.h"
#include "checkpoints/checkpoint_reader.h"
#include "checkpoints/crc32c.h"
#include "checkpoints/dtype.h"
#include "launch/commands.h"
#include "tests/fuzz/fuzz_input.h"

namespace {

namespace ck = nats::checkpoint;
constexpr int64_t kStep = 7;
constexpr int64_t kMaxReadElements = 1 << 16;

// Writes rank_<rank>.bin as a valid header followed by `payload`; returns the file's bytes.
std::string WriteValidBlob(const std::string& dir, int rank, std::string_view payload) {
  auto writer = ck::BlobWriter::Create(dir, rank, kStep);
  if (!writer.ok()) std::abort();
  if (!payload.empty() && !(*writer)->Append(payload.data(), payload.size()).ok()) std::abort();
  if (!(*writer)->Finish().ok()) std::abort();
  std::string bytes(ck::kBlobHeaderBytes, '\0');
  FILE* f = std::fopen((*writer)->path().c_str(), "rb");
  if (f == nullptr || std::fread(bytes.data(), 1, bytes.size(), f) != bytes.size()) std::abort();
  std::fclose(f);
  bytes.append(payload);
  return bytes;
}

void FixUp(ck::Manifest* m, const std::string blobs[2]) {
  auto blob_of = [&](const std::string& file) -> const std::string* {
    for (int r = 0; r < 2; ++r) {
      if (file == ck::BlobFileName(r)) return &blobs[r];
    }
    return nullptr;
  };
  for (ck::BlobFile& b : *m->mutable_blobs()) {
    if (const std::string* bytes = blob_of(b.file())) b.set_bytes(bytes->size());
  }
  for (ck::TensorEntry& t : *m->mutable_tensors()) {
    for (ck::ShardSlice& s : *t.mutable_slices()) {
      const std::string* bytes = blob_of(s.file());
      if (bytes != nullptr && s.file_offset() <= bytes->size() &&
          s.bytes() <= bytes->size() - s.file_offset()) {
        s.set_crc32c(ck::Crc32c(0, bytes->data() + s.file_offset(), s.bytes()));
      }
    }
  }
}

int64_t SmallNumel(const ck::TensorEntry& t) {
  int64_t n = 1;
  for (int64_t d : t.shape()) {
    if (d < 0 || (d > 0 && n > kMaxReadElements / d)) return -1;
    n *= d;
  }
  return n;
}

void ReadEverything(ck::CheckpointReader& reader) {
  const ck::Manifest& m = reader.manifest();
  for (const ck::TensorEntry& t : m.tensors()) {
    const int64_t n = SmallNumel(t);
    if (n < 0) continue;
    const c10::ScalarType dtype = ck::ToScalarType(t.dtype());
    at::Tensor out = at::empty({n}, at::TensorOptions().dtype(dtype));
    (void)reader.Read(t.name(), 0, out, /*verify_crc=*/true);
    (void)reader.Read(t.name(), 0, out, /*verify_crc=*/false);
    if (n > 1) {
      at::Tensor part = at::empty({n - 1}, at::TensorOptions().dtype(dtype));
      (void)reader.Read(t.name(), 1, part, true);
      at::Tensor strided =
          at::empty({2, n}, at::TensorOptions().dtype(dtype)).select(1, 0);  // not contiguous
      (void)reader.Read(t.name(), n - 2, strided, false);
    }
    (void)reader.Read(t.name(), n, out, true);  // out of range
    (void)reader.CheckCompatible(t.name(), dtype, at::IntArrayRef(t.shape().data(), t.shape_size()));
    for (const ck::ShardSlice& s : t.slices()) (void)reader.VerifySlice(t, s);
  }
  at::Tensor wrong = at::empty({1}, at::kDouble);
  (void)reader.Read("no/such/tensor", 0, wrong);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // `nats inspect` prints the checkpoint summary; only crashes matter here.
  if (std::freopen("/dev/null", "w", stdout) == nullptr) std::abort();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  nats::fuzz::FuzzInput in(data, size);
  const uint8_t flags = in.Byte();
  const std::string_view manifest_bytes = in.Piece();
  std::string blobs[2] = {std::string(in.Piece()), std::string(in.Piece())};
  const std::string_view latest = in.Rest();

  const std::string root = nats::fuzz::ScratchDir() + "/ckpt";
  std::filesystem::remove_all(root);
  const std::string dir = ck::StepDirPath(root, kStep);
  std::filesystem::create_directories(dir);
  nats::fuzz::WriteFileOrDie(root + "/" + ck::kLatestFileName, latest);

  if (flags & 1) {
    ck::Manifest m;
    if (!m.ParseFromArray(manifest_bytes.data(), static_cast<int>(manifest_bytes.size()))) return 0;
    for (int r = 0; r < 2; ++r) blobs[r] = WriteValidBlob(dir, r, blobs[r]);
    FixUp(&m, blobs);
    if (!ck::WriteManifest(dir, m).ok()) return 0;
  } else {
    nats::fuzz::WriteFileOrDie(dir + "/" + ck::kManifestFileName, manifest_bytes);
    for (int r = 0; r < 2; ++r) nats::fuzz::WriteFileOrDie(dir + "/" + ck::BlobFileName(r), blobs[r]);
  }

  (void)ck::ResolveCheckpointPath(root);
  (void)ck::ResolveCheckpointPath(dir);
  (void)ck::ReadLatest(root);
  (void)ck::FindLatestCheckpoint(root);
  (void)ck::ReadManifest(dir);
  auto reader = ck::CheckpointReader::Open(dir);
  if (reader.ok()) ReadEverything(**reader);

  std::string arg0 = "inspect", arg1 = root, arg2 = "--slices";
  char* argv[] = {arg0.data(), arg1.data(), arg2.data()};
  (void)nats::launch::RunInspect(3, argv);
  return 0;
}
