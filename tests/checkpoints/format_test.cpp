// The checkpoint format on its own (checkpoints/, no communicator): blobs and the reader against
// hand-built manifests, the directory protocol (staging, commit, latest, resolution) and retention.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "checkpoints/blob_file.h"
#include "checkpoints/checkpoint_dir.h"
#include "checkpoints/checkpoint_reader.h"
#include "checkpoints/crc32c.h"
#include "checkpoints/dtype.h"
#include "checkpoints/durable_file.h"
#include "checkpoints/manifest_file.h"

namespace nats::checkpoint {
namespace {

namespace fs = std::filesystem;

class FormatTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = absl::StrCat(fs::temp_directory_path().string(), "/nats_ckpt_format_", ::getpid(), "_",
                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }
  std::string root_;
};

at::Tensor Values(at::IntArrayRef shape, at::ScalarType dtype, int seed) {
  return (at::arange(static_cast<int64_t>(c10::multiply_integers(shape)), at::kDouble) * 7 + seed)
      .remainder(251)
      .to(dtype)
      .reshape(shape);
}

// Writes `tensors` split at element `cut` between rank 0's and rank 1's blob; returns the manifest.
Manifest WriteTwoRankCheckpoint(const std::string& dir, int64_t step,
                                const std::vector<std::pair<std::string, at::Tensor>>& tensors, int64_t cut) {
  Manifest m;
  m.set_format_version(kFormatVersion);
  m.set_step(step);
  m.set_world_size(2);
  std::unique_ptr<BlobWriter> w[2] = {*BlobWriter::Create(dir, 0, step), *BlobWriter::Create(dir, 1, step)};
  for (const auto& [name, t] : tensors) {
    TensorEntry* e = m.add_tensors();
    e->set_name(name);
    e->set_dtype(*ToDType(t.scalar_type()));
    for (int64_t d : t.sizes()) e->add_shape(d);
    at::Tensor flat = t.contiguous().reshape({-1});
    const int64_t c = std::min(cut, flat.numel());
    const std::pair<int64_t, int64_t> parts[2] = {{0, c}, {c, flat.numel()}};
    for (int r = 0; r < 2; ++r) {
      auto [lo, hi] = parts[r];
      if (hi <= lo) continue;
      ShardSlice s = *w[r]->Append(static_cast<const char*>(flat.data_ptr()) + lo * flat.element_size(),
                                   (hi - lo) * flat.element_size());
      EXPECT_EQ(s.file_offset() % kBlobAlignment, 0u);
      s.set_global_offset(lo);
      s.set_numel(hi - lo);
      *e->add_slices() = s;
    }
  }
  for (int r = 0; r < 2; ++r) {
    BlobFile* b = m.add_blobs();
    b->set_rank(r);
    b->set_file(w[r]->file_name());
    b->set_bytes(*w[r]->Finish());
  }
  EXPECT_TRUE(WriteManifest(dir, m).ok());
  return m;
}

TEST_F(FormatTest, DtypesRoundTripThroughBlobsAndSlices) {
  const std::vector<std::pair<std::string, at::Tensor>> tensors = {
      {"f32", Values({10, 7}, at::kFloat, 1)}, {"f64", Values({3, 3}, at::kDouble, 2)},
      {"i64", Values({5}, at::kLong, 3)},      {"u8", Values({33}, at::kByte, 4)},
      {"bf16", Values({9}, at::kBFloat16, 5)}, {"i32", Values({4, 2}, at::kInt, 6)},
  };
  WriteTwoRankCheckpoint(root_, 5, tensors, /*cut=*/6);
  auto reader = CheckpointReader::Open(root_);
  ASSERT_TRUE(reader.ok()) << reader.status();
  for (const auto& [name, t] : tensors) {
    at::Tensor whole = at::empty(t.sizes(), t.options());
    ASSERT_TRUE((*reader)->Read(name, 0, whole).ok()) << name;
    EXPECT_TRUE(at::equal(whole, t)) << name;
    // A range across the cut (partial slices on both sides), into a non-contiguous destination.
    const int64_t n = t.numel();
    if (n >= 8) {
      at::Tensor part = at::zeros({2, 5}, t.options()).t();  // non-contiguous, 10 elements
      at::Tensor part4 = part.narrow(0, 0, 2);               // 4 elements, strided
      ASSERT_TRUE((*reader)->Read(name, 3, part4).ok()) << name;
      EXPECT_TRUE(at::equal(part4.contiguous().reshape({-1}), t.reshape({-1}).narrow(0, 3, 4))) << name;
      at::Tensor unverified = at::empty({n - 5}, t.options());
      ASSERT_TRUE((*reader)->Read(name, 5, unverified, /*verify_crc=*/false).ok());
      EXPECT_TRUE(at::equal(unverified, t.reshape({-1}).narrow(0, 5, n - 5))) << name;
    }
  }
}

TEST_F(FormatTest, ReaderNamesTensorAndFixOnMisuse) {
  WriteTwoRankCheckpoint(root_, 5, {{"model/h0.qkv.weight", Values({384, 128}, at::kFloat, 0)}}, 1000);
  auto reader = CheckpointReader::Open(root_);
  ASSERT_TRUE(reader.ok()) << reader.status();
  absl::Status shape = (*reader)->CheckCompatible("model/h0.qkv.weight", at::kFloat, {384, 64});
  EXPECT_EQ(shape.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(shape.message().find(
                "tensor model/h0.qkv.weight: checkpoint shape [384, 128] but the model has [384, 64]"),
            absl::string_view::npos)
      << shape;
  absl::Status dtype = (*reader)->CheckCompatible("model/h0.qkv.weight", at::kDouble, {384, 128});
  EXPECT_NE(dtype.message().find("checkpoint dtype float32"), absl::string_view::npos) << dtype;
  EXPECT_EQ((*reader)->CheckCompatible("model/nope", at::kFloat, {1}).code(), absl::StatusCode::kNotFound);
  at::Tensor too_far = at::empty({10}, at::kFloat);
  EXPECT_EQ((*reader)->Read("model/h0.qkv.weight", 384 * 128 - 5, too_far).code(),
            absl::StatusCode::kOutOfRange);
  at::Tensor wrong = at::empty({10}, at::kDouble);
  EXPECT_EQ((*reader)->Read("model/h0.qkv.weight", 0, wrong).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(FormatTest, DamagedManifestsAreRefused) {
  Manifest m = WriteTwoRankCheckpoint(root_, 5, {{"t", Values({100}, at::kFloat, 0)}}, 40);
  Manifest gap = m;
  gap.mutable_tensors(0)->mutable_slices(1)->set_global_offset(41);
  ASSERT_TRUE(WriteManifest(root_, gap).ok());
  auto reader = CheckpointReader::Open(root_);
  ASSERT_FALSE(reader.ok());
  EXPECT_EQ(reader.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(reader.status().message().find("tensor t"), absl::string_view::npos) << reader.status();

  Manifest future = m;
  future.set_format_version(kFormatVersion + 1);
  ASSERT_TRUE(WriteManifest(root_, future).ok());
  EXPECT_EQ(CheckpointReader::Open(root_).status().code(), absl::StatusCode::kFailedPrecondition);

  std::ofstream(absl::StrCat(root_, "/", kManifestFileName), std::ios::trunc) << "\xff\xff\xff garbage";
  EXPECT_EQ(CheckpointReader::Open(root_).status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(FormatTest, BlobFromAnotherSaveIsNamed) {
  WriteTwoRankCheckpoint(root_, 5, {{"t", Values({100}, at::kFloat, 0)}}, 40);
  // Replace rank 1's blob with one written at another step (same size).
  const std::string other = absl::StrCat(root_, "/other");
  fs::create_directories(other);
  WriteTwoRankCheckpoint(other, 6, {{"t", Values({100}, at::kFloat, 0)}}, 40);
  fs::copy_file(other + "/rank_1.bin", root_ + "/rank_1.bin", fs::copy_options::overwrite_existing);
  auto reader = CheckpointReader::Open(root_);
  ASSERT_TRUE(reader.ok());
  at::Tensor out = at::empty({100}, at::kFloat);
  absl::Status s = (*reader)->Read("t", 0, out);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("rank_1.bin: the file was written by rank 1 at step 6"), absl::string_view::npos)
      << s;
}

TEST(Crc32c, MatchesTheBitwiseDefinitionAndKnownValue) {
  EXPECT_EQ(Crc32c(0, "123456789", 9), 0xE3069283u);  // the CRC-32C check value
  EXPECT_EQ(Crc32cReference(0, "123456789", 9), 0xE3069283u);
  std::vector<unsigned char> data(5000 + 3);  // the largest size at the largest start (ASan caught 5000)
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<unsigned char>((i * 2654435761u) >> 13);
  for (size_t size : {0, 1, 7, 8, 9, 31, 32, 33, 100, 4999}) {
    for (size_t start : {0, 1, 3}) {
      const uint32_t ref = Crc32cReference(0, data.data() + start, size);
      EXPECT_EQ(Crc32c(0, data.data() + start, size), ref) << size << " at " << start;
      const size_t cut = size / 3;  // incremental over two pieces
      EXPECT_EQ(Crc32c(Crc32c(0, data.data() + start, cut), data.data() + start + cut, size - cut), ref);
    }
  }
  std::printf("Crc32c uses %s\n", Crc32cIsHardware() ? "SSE4.2" : "the software table");
}

void MakeCompleteStep(const std::string& root, int64_t step) {
  const std::string dir = StepDirPath(root, step);
  fs::create_directories(dir);
  Manifest m;
  m.set_format_version(kFormatVersion);
  m.set_step(step);
  ASSERT_TRUE(WriteManifest(dir, m).ok());
}

TEST_F(FormatTest, StagingCommitAndLatest) {
  EXPECT_EQ(StepDirName(1000), "step_00001000");
  EXPECT_EQ(StepDirName(123456789), "step_123456789");
  EXPECT_EQ(FindLatestCheckpoint(root_).status().code(), absl::StatusCode::kNotFound);

  for (int round = 0; round < 2; ++round) {  // the second round replaces an existing step_00000007
    auto staging = PrepareStagingDir(root_, 7);
    ASSERT_TRUE(staging.ok()) << staging.status();
    EXPECT_EQ(*staging, StagingDirPath(root_, 7));
    std::ofstream(*staging + "/payload") << round;
    Manifest m;
    m.set_format_version(kFormatVersion);
    m.set_step(7);
    m.set_consumed_samples(round);
    ASSERT_TRUE(WriteManifest(*staging, m).ok());
    EXPECT_EQ(ResolveCheckpointPath(*staging).status().code(), absl::StatusCode::kFailedPrecondition);
    ASSERT_TRUE(CommitStagingDir(root_, 7).ok());
    ASSERT_TRUE(WriteLatest(root_, 7).ok());
    EXPECT_FALSE(fs::exists(StagingDirPath(root_, 7)));
    auto manifest = ReadManifest(StepDirPath(root_, 7));
    ASSERT_TRUE(manifest.ok());
    EXPECT_EQ(manifest->consumed_samples(), round);
  }
  EXPECT_EQ(*ReadLatest(root_), 7);
  EXPECT_EQ(*FindLatestCheckpoint(root_), StepDirPath(root_, 7));
  EXPECT_EQ(*ResolveCheckpointPath(root_), StepDirPath(root_, 7));
  EXPECT_EQ(*ResolveCheckpointPath(StepDirPath(root_, 7) + "/"), StepDirPath(root_, 7));

  // The newest complete step wins, also over a `latest` that names an older complete one (a kill between
  // the commit rename and the pointer update); incomplete, staging and abandoned directories never count.
  MakeCompleteStep(root_, 9);
  EXPECT_EQ(*ReadLatest(root_), 7);
  EXPECT_EQ(*FindLatestCheckpoint(root_), StepDirPath(root_, 9));
  fs::create_directories(StepDirPath(root_, 11));     // no manifest
  fs::create_directories(StagingDirPath(root_, 12));  // interrupted save
  MakeCompleteStep(root_, 13);
  fs::rename(StepDirPath(root_, 13), StepDirPath(root_, 13) + ".abandoned");  // a rollback's leftover
  fs::remove_all(StepDirPath(root_, 7));
  EXPECT_EQ(*FindLatestCheckpoint(root_), StepDirPath(root_, 9));
  EXPECT_EQ(ResolveCheckpointPath(StepDirPath(root_, 11)).status().code(), absl::StatusCode::kNotFound);
  std::ofstream(root_ + "/latest", std::ios::trunc) << "nonsense\n";
  EXPECT_EQ(ReadLatest(root_).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(*FindLatestCheckpoint(root_), StepDirPath(root_, 9));
}

// Flips one bit of the file at byte `offset`.
void FlipBit(const std::string& path, uint64_t offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  f.read(&c, 1);
  c ^= 0x10;
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(&c, 1);
}

TEST_F(FormatTest, DamagedManifestIsRefusedNamingTheFileAtEveryByte) {
  const Manifest m = WriteTwoRankCheckpoint(root_, 5, {{"t", Values({100}, at::kFloat, 0)}}, 40);
  const std::string path = absl::StrCat(root_, "/", kManifestFileName);
  const std::string good = *ReadFileToString(path);
  ASSERT_GT(good.size(), kManifestFrameBytes);
  EXPECT_EQ(good.substr(0, 8), "NATSMNF1");
  // Every byte of the frame and of the payload: each flip is refused (none parses into other values).
  for (uint64_t offset = 0; offset < good.size(); ++offset) {
    SCOPED_TRACE(absl::StrCat("flipped byte ", offset, " of ", good.size()));
    std::ofstream(path, std::ios::trunc | std::ios::binary) << good;
    FlipBit(path, offset);
    absl::StatusOr<Manifest> read = ReadManifest(root_);
    ASSERT_FALSE(read.ok());
    EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_NE(read.status().message().find(path), absl::string_view::npos) << read.status();
    EXPECT_NE(read.status().message().find("--resume_from"), absl::string_view::npos) << read.status();
    if (offset >= kManifestFrameBytes) {
      EXPECT_NE(read.status().message().find("checksum mismatch"), absl::string_view::npos) << read.status();
    }
    EXPECT_EQ(CheckpointReader::Open(root_).status().code(), absl::StatusCode::kDataLoss);
  }
  // Truncated, extended, empty.
  for (const std::string& bytes :
       {good.substr(0, good.size() - 1), good + "x", good.substr(0, 10), std::string()}) {
    std::ofstream(path, std::ios::trunc | std::ios::binary) << bytes;
    absl::StatusOr<Manifest> read = ReadManifest(root_);
    EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss) << bytes.size();
    EXPECT_NE(read.status().message().find(path), absl::string_view::npos) << read.status();
  }
  // A manifest written before the frame existed (bare serialized message) still reads.
  std::string legacy;
  ASSERT_TRUE(m.SerializeToString(&legacy));
  std::ofstream(path, std::ios::trunc | std::ios::binary) << legacy;
  absl::StatusOr<Manifest> read = ReadManifest(root_);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->step(), 5);
  EXPECT_TRUE(CheckpointReader::Open(root_).ok());
  std::ofstream(path, std::ios::trunc | std::ios::binary) << good;
  EXPECT_TRUE(CheckpointReader::Open(root_).ok());
}

TEST_F(FormatTest, DamagedNewestManifestStopsTheSearchInsteadOfGoingBack) {
  MakeCompleteStep(root_, 4);
  MakeCompleteStep(root_, 6);
  FlipBit(absl::StrCat(StepDirPath(root_, 6), "/", kManifestFileName), kManifestFrameBytes + 1);
  absl::StatusOr<std::string> found = FindLatestCheckpoint(root_);
  ASSERT_FALSE(found.ok());
  EXPECT_EQ(found.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(found.status().message().find(StepDirPath(root_, 6)), absl::string_view::npos) << found.status();
  EXPECT_EQ(*ResolveCheckpointPath(StepDirPath(root_, 4)), StepDirPath(root_, 4));  // asked for by name: fine
}

TEST_F(FormatTest, AbandonAndRemoveAllCheckpoints) {
  for (int64_t s : {2, 4, 6, 8}) MakeCompleteStep(root_, s);
  ASSERT_TRUE(WriteLatest(root_, 8).ok());
  // A rollback to 4: 6 and 8 become .abandoned (a second rollback over the same names gets .abandoned2).
  auto moved = AbandonStepsAfter(root_, 4);
  ASSERT_TRUE(moved.ok()) << moved.status();
  EXPECT_EQ(*moved, (std::vector<std::string>{StepDirPath(root_, 6) + ".abandoned",
                                              StepDirPath(root_, 8) + ".abandoned"}));
  EXPECT_EQ(*ListCompleteSteps(root_), (std::vector<int64_t>{2, 4}));
  EXPECT_EQ(*FindLatestCheckpoint(root_), StepDirPath(root_, 4));
  MakeCompleteStep(root_, 6);
  EXPECT_EQ(*AbandonStepsAfter(root_, 4), std::vector<std::string>{StepDirPath(root_, 6) + ".abandoned2"});
  // Retention never touches abandoned steps; an abandoned step still opens when named.
  RetentionPolicy policy;
  policy.keep_last = 1;
  EXPECT_EQ(*ApplyRetention(root_, policy, 4), std::vector<int64_t>{2});
  EXPECT_TRUE(fs::exists(StepDirPath(root_, 8) + ".abandoned/manifest.pb"));
  EXPECT_EQ(*ResolveCheckpointPath(StepDirPath(root_, 8) + ".abandoned"),
            StepDirPath(root_, 8) + ".abandoned");
  // --overwrite: every checkpoint-protocol entry goes, anything else stays.
  fs::create_directories(StagingDirPath(root_, 10));
  std::ofstream(root_ + "/notes.txt") << "mine";
  auto removed = RemoveAllCheckpoints(root_);
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(*removed, 1);
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(root_)) left.push_back(e.path().filename().string());
  EXPECT_EQ(left, std::vector<std::string>{"notes.txt"});
  EXPECT_EQ(*RemoveAllCheckpoints(root_ + "/does_not_exist"), 0);
}

TEST_F(FormatTest, RetentionKeepsNewestEveryKthLatestAndFuture) {
  for (int64_t s = 100; s <= 1000; s += 100) MakeCompleteStep(root_, s);
  fs::create_directories(StagingDirPath(root_, 50));
  fs::create_directories(StepDirPath(root_, 60) + ".deleting");
  ASSERT_TRUE(WriteLatest(root_, 200).ok());  // e.g. a rollback target the user pinned
  RetentionPolicy policy;
  policy.keep_last = 2;
  policy.keep_every = 300;
  auto deleted = ApplyRetention(root_, policy, /*protect_step=*/800);
  ASSERT_TRUE(deleted.ok()) << deleted.status();
  EXPECT_EQ(*deleted, (std::vector<int64_t>{100, 400, 500}));
  // kept: newest two up to 800 (700, 800), multiples of 300 (300, 600), latest (200), beyond 800 (900, 1000)
  EXPECT_EQ(*ListCompleteSteps(root_), (std::vector<int64_t>{200, 300, 600, 700, 800, 900, 1000}));
  EXPECT_FALSE(fs::exists(StagingDirPath(root_, 50)));
  EXPECT_FALSE(fs::exists(StepDirPath(root_, 60) + ".deleting"));

  policy.keep_last = 0;  // keeps everything
  EXPECT_TRUE(ApplyRetention(root_, policy, 1000)->empty());
  policy.keep_last = 1;
  policy.keep_every = 0;
  ASSERT_TRUE(WriteLatest(root_, 1000).ok());
  EXPECT_EQ(*ApplyRetention(root_, policy, 1000), (std::vector<int64_t>{200, 300, 600, 700, 800, 900}));
  EXPECT_EQ(*ListCompleteSteps(root_), (std::vector<int64_t>{1000}));
}

}  // namespace
}  // namespace nats::checkpoint
