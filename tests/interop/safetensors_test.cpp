// interop/safetensors.h against files from an independent hand-written Python writer (safetensors_writer.py):
// every mapped dtype, 0-rank and empty tensors and metadata read bit for bit; what the C++ writer writes is
// accepted by the Python reader and read back identically here; sharded checkpoints both ways; and every
// malformed file the Python script makes fails with its expected message naming the file, without a crash.
#include "interop/safetensors.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace nats::interop {
namespace {
namespace fs = std::filesystem;

#ifndef NATS_TORCH_PYTHON
#define NATS_TORCH_PYTHON "/usr/bin/python3"
#endif

std::string Python() {
  const char* env = std::getenv("NATS_TORCH_PYTHON");
  return env != nullptr ? env : NATS_TORCH_PYTHON;
}

std::string WriterScript() {
  const char* env = std::getenv("NATS_SAFETENSORS_WRITER");
  if (env != nullptr) return env;
#ifdef NATS_SAFETENSORS_WRITER
  return NATS_SAFETENSORS_WRITER;
#else
  return std::string(std::getenv("NATS_SOURCE_DIR")) + "/tests/interop/safetensors_writer.py";
#endif
}

// Runs the writer script with `args`; its exit code (0: success; 1: a verification failed, printed).
int RunWriter(const std::string& args) {
  const std::string command = absl::StrCat(Python(), " ", WriterScript(), " ", args);
  const int rc = std::system(command.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

// One fixture tree per test process, made by `safetensors_writer.py fixtures` before the first test.
class FixtureEnvironment : public ::testing::Environment {
 public:
  static const fs::path& Root() { return root_; }
  void SetUp() override {
    root_ = fs::temp_directory_path() / absl::StrCat("nats_safetensors_test_", ::getpid());
    fs::remove_all(root_);
    fs::create_directories(root_);
    ASSERT_EQ(RunWriter(absl::StrCat("fixtures ", (root_ / "fixtures").string())), 0)
        << "the fixture script failed (" << Python() << " needs torch 1.13 and numpy)";
  }
  void TearDown() override {
    std::error_code ec;
    if (!::testing::UnitTest::GetInstance()->Failed()) fs::remove_all(root_, ec);
  }

 private:
  static fs::path root_;
};
fs::path FixtureEnvironment::root_;
const auto* const kEnvironment = ::testing::AddGlobalTestEnvironment(new FixtureEnvironment());

fs::path Fixtures() { return FixtureEnvironment::Root() / "fixtures"; }
fs::path Scratch(const std::string& name) {
  const fs::path dir = FixtureEnvironment::Root() / "scratch" / name;
  fs::create_directories(dir);
  return dir;
}

nlohmann::json ReadJson(const fs::path& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

std::string ReadBytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string TensorBytes(const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  return std::string(static_cast<const char*>(c.data_ptr()), c.nbytes());
}

c10::ScalarType ExpectedType(const std::string& dtype) {
  static const std::map<std::string, c10::ScalarType> types = {
      {"F64", at::kDouble}, {"F32", at::kFloat}, {"F16", at::kHalf},  {"BF16", at::kBFloat16},
      {"I64", at::kLong},   {"I32", at::kInt},   {"I16", at::kShort}, {"I8", at::kChar},
      {"U8", at::kByte},    {"BOOL", at::kBool}};
  return types.at(dtype);
}

// Checks `t` against one manifest entry: dtype, shape, the raw bytes, and the float64 values when given.
void ExpectMatchesManifest(const at::Tensor& t, const nlohmann::json& want, const fs::path& expected_dir) {
  const std::string name = want["name"];
  EXPECT_EQ(t.scalar_type(), ExpectedType(want["dtype"])) << name;
  EXPECT_EQ(t.sizes().vec(), want["shape"].get<std::vector<int64_t>>()) << name;
  EXPECT_EQ(TensorBytes(t), ReadBytes(expected_dir / want["bin"].get<std::string>())) << name;
  if (!want["values"].is_null()) {
    const at::Tensor values = t.to(at::kDouble).flatten().contiguous();
    const std::vector<double> got(values.data_ptr<double>(), values.data_ptr<double>() + values.numel());
    EXPECT_EQ(got, want["values"].get<std::vector<double>>()) << name;
  }
}

std::vector<std::pair<std::string, at::Tensor>> ReadAllInManifestOrder(const SafetensorsFile& file,
                                                                       const nlohmann::json& manifest) {
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const nlohmann::json& t : manifest["tensors"]) {
    absl::StatusOr<at::Tensor> got = file.Get(t["name"]);
    EXPECT_TRUE(got.ok()) << got.status();
    if (got.ok()) tensors.emplace_back(t["name"], *got);
  }
  return tensors;
}

TEST(SafetensorsFile, ReadsEveryDtypeBitForBit) {
  const fs::path dir = Fixtures() / "roundtrip";
  const nlohmann::json manifest = ReadJson(dir / "expected" / "manifest.json");
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file =
      SafetensorsFile::Open((dir / "roundtrip.safetensors").string());
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->metadata(), (manifest["metadata"].get<std::map<std::string, std::string>>()));
  ASSERT_EQ((*file)->entries().size(), manifest["tensors"].size());
  for (size_t i = 1; i < (*file)->entries().size(); ++i) {
    EXPECT_LT((*file)->entries()[i - 1].name, (*file)->entries()[i].name);  // sorted by name
  }
  for (const nlohmann::json& want : manifest["tensors"]) {
    const SafetensorsEntry* entry = (*file)->Find(want["name"]);
    ASSERT_NE(entry, nullptr) << want["name"];
    EXPECT_EQ(entry->dtype, want["dtype"]);
    absl::StatusOr<at::Tensor> got = (*file)->Get(want["name"]);
    ASSERT_TRUE(got.ok()) << got.status();
    ExpectMatchesManifest(*got, want, dir / "expected");
  }
  EXPECT_EQ((*file)->Find("absent"), nullptr);
}

TEST(SafetensorsFile, GetNamesWhatIsMissingOrUnreadable) {
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file =
      SafetensorsFile::Open((Fixtures() / "roundtrip" / "roundtrip.safetensors").string());
  ASSERT_TRUE(file.ok()) << file.status();
  absl::StatusOr<at::Tensor> missing = (*file)->Get("no.such.tensor");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("no.such.tensor"), std::string::npos) << missing.status();
  EXPECT_NE(missing.status().message().find("roundtrip.safetensors"), std::string::npos) << missing.status();

  // U16/F8/F4/C64 are valid safetensors: Open accepts them, Get says it does not read them.
  const std::string path = (Fixtures() / "roundtrip" / "unreadable.safetensors").string();
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> unreadable = SafetensorsFile::Open(path);
  ASSERT_TRUE(unreadable.ok()) << unreadable.status();
  for (const auto& [name, dtype] : std::vector<std::pair<std::string, std::string>>{
           {"u16", "U16"}, {"f8", "F8_E4M3"}, {"f4", "F4"}, {"c64", "C64"}}) {
    absl::StatusOr<at::Tensor> got = (*unreadable)->Get(name);
    EXPECT_EQ(got.status().code(), absl::StatusCode::kUnimplemented) << name;
    EXPECT_NE(got.status().message().find(absl::StrCat("\"", name, "\" has dtype ", dtype)),
              std::string::npos)
        << got.status();
  }
}

TEST(SafetensorsFile, CppWriteIsAcceptedByThePythonReader) {
  const fs::path dir = Fixtures() / "roundtrip";
  const nlohmann::json manifest = ReadJson(dir / "expected" / "manifest.json");
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file =
      SafetensorsFile::Open((dir / "roundtrip.safetensors").string());
  ASSERT_TRUE(file.ok()) << file.status();
  const std::string out = (Scratch("cpp_write") / "cpp.safetensors").string();
  ASSERT_TRUE(WriteSafetensors(out, ReadAllInManifestOrder(**file, manifest), (*file)->metadata()).ok());
  EXPECT_FALSE(fs::exists(out + ".tmp"));
  uint64_t header_bytes = 0;
  std::memcpy(&header_bytes, ReadBytes(out).data(), 8);
  EXPECT_EQ((8 + header_bytes) % 8, 0u) << "the data must start 8-byte aligned";
  EXPECT_EQ(RunWriter(absl::StrCat("verify ", out, " ", (dir / "expected").string())), 0);
}

TEST(SafetensorsFile, CppWriteThenCppReadIsTheIdentity) {
  at::manual_seed(3);
  std::vector<std::pair<std::string, at::Tensor>> tensors = {
      {"f64", at::randn({3, 4}, at::kDouble)},
      {"f32.transposed", at::randn({5, 3}).t()},  // not contiguous: written in row-major order of the view
      {"f16", at::randn({7}).to(at::kHalf)},
      {"bf16", at::randn({2, 3, 2}).to(at::kBFloat16)},
      {"i64", at::randint(-1000000, 1000000, {9}, at::kLong)},
      {"i32", at::randint(-100000, 100000, {4, 1}, at::kInt)},
      {"i16", at::randint(-30000, 30000, {3}, at::kShort)},
      {"i8", at::randint(-128, 127, {5}, at::kChar)},
      {"u8", at::randint(0, 255, {6}, at::kByte)},
      {"bool", at::randint(0, 2, {2, 2}).to(at::kBool)},
      {"scalar", at::scalar_tensor(2.5, at::kFloat)},
      {"empty", at::zeros({0, 3}, at::kBFloat16)},
      {"nan", at::full({2}, std::numeric_limits<float>::quiet_NaN())},
  };
  const std::string path = (Scratch("identity") / "w.safetensors").string();
  ASSERT_TRUE(WriteSafetensors(path, tensors, {{"k", "v"}}).ok());
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->metadata(), (std::map<std::string, std::string>{{"k", "v"}}));
  EXPECT_EQ((*file)->path(), path);
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    const SafetensorsEntry* entry = (*file)->Find(name);
    ASSERT_NE(entry, nullptr) << name;
    EXPECT_EQ(entry->begin, offset) << name << ": data in the given order";
    offset = entry->end;
    absl::StatusOr<at::Tensor> got = (*file)->Get(name);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->scalar_type(), tensor.scalar_type()) << name;
    EXPECT_EQ(got->sizes(), tensor.sizes()) << name;
    EXPECT_EQ(TensorBytes(*got), TensorBytes(tensor)) << name;
  }
}

TEST(SafetensorsFile, WriterRejectsBadInputsNamingThem) {
  const std::string path = (Scratch("writer_errors") / "bad.safetensors").string();
  absl::Status duplicate = WriteSafetensors(path, {{"a", at::ones({1})}, {"a", at::ones({2})}});
  EXPECT_EQ(duplicate.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(duplicate.message().find("\"a\" appears twice"), std::string::npos) << duplicate;
  absl::Status reserved = WriteSafetensors(path, {{"__metadata__", at::ones({1})}});
  EXPECT_EQ(reserved.code(), absl::StatusCode::kInvalidArgument) << reserved;
  absl::Status complex = WriteSafetensors(path, {{"c", at::ones({1}, at::kComplexDouble)}});
  EXPECT_EQ(complex.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(complex.message().find("tensor \"c\""), std::string::npos) << complex;
  EXPECT_FALSE(fs::exists(path));
  const std::string nowhere = (Scratch("writer_errors") / "no" / "such" / "dir" / "x.safetensors").string();
  absl::Status missing_dir = WriteSafetensors(nowhere, {{"a", at::ones({1})}});
  EXPECT_FALSE(missing_dir.ok());
  EXPECT_NE(missing_dir.message().find(nowhere), std::string::npos) << missing_dir;
}

// nlohmann's default parse keeps the last of two equal keys; the reader must refuse the file instead.
TEST(SafetensorsFile, DuplicateTensorNamesAreRejected) {
  const std::string header =
      R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"w":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})";
  const uint64_t n = header.size();
  const std::string path = (Scratch("duplicates") / "dup.safetensors").string();
  {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(&n), 8);
    out << header << "\x01\x02";
  }
  EXPECT_EQ(nlohmann::json::parse(header)["w"]["data_offsets"][0], 1);  // the silent behaviour being guarded
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(file.status().message().find("duplicate key \"w\""), std::string::npos) << file.status();
  EXPECT_NE(file.status().message().find(path), std::string::npos) << file.status();
}

TEST(SafetensorsCheckpoint, OpensPythonShardsByDirectoryIndexOrFile) {
  const fs::path dir = Fixtures() / "sharded";
  const nlohmann::json manifest = ReadJson(dir / "expected" / "manifest.json");
  std::vector<std::string> want_names;
  for (const nlohmann::json& t : manifest["tensors"]) want_names.push_back(t["name"]);
  std::sort(want_names.begin(), want_names.end());
  for (const fs::path& path : {dir / "checkpoint", dir / "checkpoint" / "model.safetensors.index.json"}) {
    absl::StatusOr<std::unique_ptr<SafetensorsCheckpoint>> ckpt = SafetensorsCheckpoint::Open(path.string());
    ASSERT_TRUE(ckpt.ok()) << ckpt.status();
    EXPECT_EQ((*ckpt)->names(), want_names);
    EXPECT_EQ((*ckpt)->metadata(), (manifest["metadata"].get<std::map<std::string, std::string>>()));
    for (const nlohmann::json& want : manifest["tensors"]) {
      ASSERT_NE((*ckpt)->Find(want["name"]), nullptr);
      absl::StatusOr<at::Tensor> got = (*ckpt)->Get(want["name"]);
      ASSERT_TRUE(got.ok()) << got.status();
      ExpectMatchesManifest(*got, want, dir / "expected");
    }
    absl::StatusOr<at::Tensor> missing = (*ckpt)->Get("nope");
    EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
    EXPECT_EQ((*ckpt)->Find("nope"), nullptr);
  }
  // A single shard opened as a file is a checkpoint of its own tensors.
  absl::StatusOr<std::unique_ptr<SafetensorsCheckpoint>> one =
      SafetensorsCheckpoint::Open((dir / "checkpoint" / "model-00001-of-00002.safetensors").string());
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_FALSE((*one)->names().empty());
  EXPECT_LT((*one)->names().size(), want_names.size());
}

TEST(SafetensorsCheckpoint, CppShardsAreAcceptedByThePythonReaderAndReadBack) {
  const fs::path fixture = Fixtures() / "sharded";
  const nlohmann::json manifest = ReadJson(fixture / "expected" / "manifest.json");
  absl::StatusOr<std::unique_ptr<SafetensorsCheckpoint>> source =
      SafetensorsCheckpoint::Open((fixture / "checkpoint").string());
  ASSERT_TRUE(source.ok()) << source.status();
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  uint64_t total = 0;
  for (const nlohmann::json& t : manifest["tensors"]) {
    absl::StatusOr<at::Tensor> got = (*source)->Get(t["name"]);
    ASSERT_TRUE(got.ok()) << got.status();
    total += got->nbytes();
    tensors.emplace_back(t["name"], *got);
  }
  const fs::path out = Scratch("cpp_shards") / "model";
  const uint64_t max_shard_bytes = 200;  // several shards; the 320-byte embedding is alone in its shard
  ASSERT_TRUE(WriteSafetensorsCheckpoint(out.string(), tensors, (*source)->metadata(), max_shard_bytes).ok());
  EXPECT_TRUE(fs::exists(out / "model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(out / "model.safetensors"));
  EXPECT_EQ(RunWriter(absl::StrCat("verify-checkpoint ", out.string(), " ", (fixture / "expected").string(),
                                   " --max-shard-bytes ", max_shard_bytes, " --min-shards 3")),
            0);
  absl::StatusOr<std::unique_ptr<SafetensorsCheckpoint>> back = SafetensorsCheckpoint::Open(out.string());
  ASSERT_TRUE(back.ok()) << back.status();
  for (const auto& [name, tensor] : tensors) {
    absl::StatusOr<at::Tensor> got = (*back)->Get(name);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(TensorBytes(*got), TensorBytes(tensor)) << name;
  }

  // Rewritten into the same folder as one file: the old index and shards go, so nothing stale is read.
  ASSERT_TRUE(WriteSafetensorsCheckpoint(out.string(), tensors, (*source)->metadata(), total).ok());
  EXPECT_TRUE(fs::exists(out / "model.safetensors"));
  EXPECT_FALSE(fs::exists(out / "model.safetensors.index.json"));
  for (const fs::directory_entry& entry : fs::directory_iterator(out)) {
    EXPECT_EQ(entry.path().filename().string().find("-of-"), std::string::npos)
        << entry.path() << " is stale";
  }
  EXPECT_EQ(RunWriter(absl::StrCat("verify-checkpoint ", out.string(), " ", (fixture / "expected").string())),
            0);
  absl::StatusOr<std::unique_ptr<SafetensorsCheckpoint>> single = SafetensorsCheckpoint::Open(out.string());
  ASSERT_TRUE(single.ok()) << single.status();
  EXPECT_EQ((*single)->names().size(), tensors.size());
}

TEST(SafetensorsMalformed, EveryCaseFailsWithItsMessageAndTheFileName) {
  const fs::path dir = Fixtures() / "malformed";
  const nlohmann::json cases = ReadJson(dir / "cases.json");
  EXPECT_GE(cases.size(), 12u);
  for (const nlohmann::json& c : cases) {
    const std::string file = c["file"];
    const std::string expected = c["expected"];
    const std::string path = (dir / file).string();
    const absl::Status status = c["kind"] == "checkpoint" ? SafetensorsCheckpoint::Open(path).status()
                                                          : SafetensorsFile::Open(path).status();
    ASSERT_FALSE(status.ok()) << file << " was accepted";
    EXPECT_TRUE(status.code() == absl::StatusCode::kInvalidArgument ||
                status.code() == absl::StatusCode::kDataLoss || status.code() == absl::StatusCode::kNotFound)
        << file << ": " << status;
    EXPECT_NE(status.message().find(expected), std::string::npos)
        << file << ": the message lacks \"" << expected << "\": " << status;
    EXPECT_NE(status.message().find(file), std::string::npos)
        << file << ": the message lacks the file: " << status;
  }
}

TEST(SafetensorsCheckpoint, DirectoryWithoutWeightsIsNotFound) {
  const fs::path dir = Scratch("empty_dir");
  absl::StatusOr<std::unique_ptr<SafetensorsCheckpoint>> ckpt = SafetensorsCheckpoint::Open(dir.string());
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(ckpt.status().message().find("model.safetensors"), std::string::npos) << ckpt.status();
}

}  // namespace
}  // namespace nats::interop
