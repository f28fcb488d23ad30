// nats import / export against models written in Hugging Face layout by an independent writer
// (tests/interop/hf_reference.py: its own safetensors writer and its own PyTorch implementation of GPT-2 and
// Llama, in float64). The test runs the script once into a temporary folder (NATS_TORCH_PYTHON and
// NATS_HF_REFERENCE come from tests/interop/CMakeLists.txt).
//
// Tolerance: our float32 forward against the float64 reference, |diff| <= 2e-4 + 2e-4 |ref| per logit (logits
// are O(1-10); float32 accumulation over d <= 96 leaves ~1e-5).
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "interop/hf_config.h"
#include "interop/hf_convert.h"
#include "interop/safetensors.h"
#include "nats/kv_cache.h"
#include "runtime/inference_model.h"

namespace nats::interop {
namespace {

namespace fs = std::filesystem;

// The fixtures' folder: $NATS_HF_FIXTURES (ctest's interop_hf_fixtures step writes it), else written on first
// use into a temporary folder; empty when the script failed (its output is printed).
std::string Fixtures() {
  static const std::string dir = []() -> std::string {
    if (const char* given = std::getenv("NATS_HF_FIXTURES"); given != nullptr && *given != 0) return given;
    const fs::path out = fs::temp_directory_path() / ("nats_hf_fixtures_" + std::to_string(::getpid()));
    fs::remove_all(out);
    const std::string command = std::string(NATS_TORCH_PYTHON) + " " + NATS_HF_REFERENCE + " " + out.string();
    if (std::system(command.c_str()) != 0) {
      ADD_FAILURE() << "fixture script failed: " << command;
      return std::string();
    }
    std::atexit([] {
      fs::remove_all(fs::temp_directory_path() / ("nats_hf_fixtures_" + std::to_string(::getpid())));
    });
    return out.string();
  }();
  return dir;
}

class HfImportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(Fixtures().empty()) << "no fixtures";
    tmp_ = fs::temp_directory_path() / ("nats_hf_import_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(tmp_);
    fs::create_directories(tmp_);
  }
  void TearDown() override {
    if (!tmp_.empty()) fs::remove_all(tmp_);
  }

  InferenceModel Import(const std::string& fixture, const std::string& out,
                        const ImportOptions& options = {}) {
    auto imported = ImportHfModel(fs::path(Fixtures()) / fixture, (tmp_ / out).string(), options);
    EXPECT_TRUE(imported.ok()) << imported.status();
    auto loaded = LoadModelForInference((tmp_ / out).string());
    EXPECT_TRUE(loaded.ok()) << loaded.status();
    return std::move(*loaded);
  }

  fs::path tmp_;
};

void ExpectLogitsMatch(const at::Tensor& ours, const at::Tensor& reference, const std::string& what) {
  ASSERT_EQ(ours.sizes(), reference.sizes()) << what;
  at::Tensor ref = reference.to(at::kDouble);
  at::Tensor diff = (ours.to(at::kDouble) - ref).abs();
  at::Tensor bound = 2e-4 + 2e-4 * ref.abs();
  EXPECT_TRUE((diff <= bound).all().item<bool>()) << what << ": max |diff| " << diff.max().item<double>()
                                                  << ", max |ref| " << ref.abs().max().item<double>();
  // The reference is not trivially small (a test that compares zeros proves nothing).
  EXPECT_GT(ref.std().item<double>(), 0.1) << what;
}

void ExpectSameParameters(const InferenceModel& a, const InferenceModel& b) {
  auto pa = a.model->named_parameters();
  auto pb = b.model->named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (const auto& p : pa) {
    const at::Tensor* other = pb.find(p.key());
    ASSERT_NE(other, nullptr) << p.key();
    EXPECT_TRUE(at::equal(p.value(), *other)) << p.key();
  }
}

struct Reference {
  at::Tensor tokens, logits;
};

Reference ReadReference(const std::string& fixture) {
  auto file = SafetensorsFile::Open((fs::path(Fixtures()) / fixture / "reference.safetensors").string());
  EXPECT_TRUE(file.ok()) << file.status();
  Reference r;
  r.tokens = *(*file)->Get("tokens");
  r.logits = *(*file)->Get("logits");
  return r;
}

class LogitsTest : public HfImportTest, public ::testing::WithParamInterface<std::string> {};

TEST_P(LogitsTest, ImportedModelGivesTheReferenceLogits) {
  const std::string fixture = GetParam();
  InferenceModel m = Import(fixture, "ckpt");
  Reference ref = ReadReference(fixture);
  torch::NoGradGuard no_grad;
  ExpectLogitsMatch(m.model->forward(ref.tokens), ref.logits, fixture + " forward");

  // The cached path (prefill + token-by-token decode) sees the same positions: learned position rows and RoPE
  // angles at the cache's offset.
  CachePolicyConfig dense;
  dense.policy = CachePolicy::kDense;
  auto cache = m.model->NewCache(dense, ref.tokens.size(0));
  const int64_t prefix = 5;
  std::vector<at::Tensor> rows = {
      m.model->Prefill(ref.tokens.narrow(1, 0, prefix), *cache, /*all_logits=*/true)};
  for (int64_t t = prefix; t < ref.tokens.size(1); ++t) {
    rows.push_back(m.model->Decode(ref.tokens.narrow(1, t, 1), *cache, /*all_logits=*/true));
  }
  ExpectLogitsMatch(at::cat(rows, 1), ref.logits, fixture + " prefill + decode");
}

INSTANTIATE_TEST_SUITE_P(Families, LogitsTest,
                         ::testing::Values("gpt2", "llama", "llama_bf16", "llama_tied"));

class RoundTripTest : public HfImportTest, public ::testing::WithParamInterface<std::string> {};

TEST_P(RoundTripTest, ImportExportImportIsTheIdentity) {
  const std::string fixture = GetParam();
  InferenceModel first = Import(fixture, "first");
  ExportOptions options;
  options.max_shard_bytes = 40000;  // several shards and an index, also for these tiny models
  auto exported = ExportHfModel((tmp_ / "first").string(), (tmp_ / "hf").string(), options);
  ASSERT_TRUE(exported.ok()) << exported.status();
  EXPECT_TRUE(fs::exists(tmp_ / "hf" / "model.safetensors.index.json"));
  auto second_import = ImportHfModel((tmp_ / "hf").string(), (tmp_ / "second").string());
  ASSERT_TRUE(second_import.ok()) << second_import.status();
  auto second = LoadModelForInference((tmp_ / "second").string());
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(first.config, second->config))
      << first.config.DebugString() << "\nvs\n"
      << second->config.DebugString();
  ExpectSameParameters(first, *second);

  // The exported tensors are the original file's, name for name and bit for bit (float32 fixtures; the bf16
  // one becomes float32 holding the same values).
  auto original = SafetensorsCheckpoint::Open((fs::path(Fixtures()) / fixture).string());
  auto ours = SafetensorsCheckpoint::Open((tmp_ / "hf").string());
  ASSERT_TRUE(original.ok() && ours.ok());
  for (const std::string& name : (*ours)->names()) {
    auto theirs = (*original)->Get(name);
    if (!theirs.ok()) {
      // GPT-2 files may omit the "transformer." prefix.
      theirs = (*original)->Get(name.substr(std::string("transformer.").size()));
    }
    ASSERT_TRUE(theirs.ok()) << name << ": " << theirs.status();
    EXPECT_TRUE(at::equal(theirs->to(at::kFloat), *(*ours)->Get(name))) << name;
  }
}

INSTANTIATE_TEST_SUITE_P(Families, RoundTripTest,
                         ::testing::Values("gpt2", "llama", "llama_bf16", "llama_tied"));

TEST_F(HfImportTest, NatsScorersTravelAsExtraTensors) {
  ImportOptions options;
  options.set_overrides = {"model.attention=NATS", "nats.window=8", "nats.lambda=3e-7"};
  auto imported = ImportHfModel((fs::path(Fixtures()) / "llama").string(), (tmp_ / "nats").string(), options);
  ASSERT_TRUE(imported.ok()) << imported.status();
  EXPECT_EQ(imported->scorers_initialised, 2);  // one per layer
  auto first = LoadModelForInference((tmp_ / "nats").string());
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(ExportHfModel((tmp_ / "nats").string(), (tmp_ / "hf").string()).ok());
  auto file = SafetensorsCheckpoint::Open((tmp_ / "hf").string());
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_NE((*file)->Find("model.layers.1.self_attn.nats_scorer.weight"), nullptr);
  auto again = ImportHfModel((tmp_ / "hf").string(), (tmp_ / "again").string());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->scorers_initialised, 0);
  auto second = LoadModelForInference((tmp_ / "again").string());
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->config.model().attention(), config::ModelConfig::NATS);
  EXPECT_EQ(second->config.nats().window(), 8);
  ExpectSameParameters(*first, *second);
}

// A copy of a fixture whose config.json / weights the test edits.
fs::path CopyFixture(const std::string& fixture, const fs::path& to) {
  fs::copy(fs::path(Fixtures()) / fixture, to, fs::copy_options::recursive);
  return to;
}

void EditConfig(const fs::path& dir, const std::string& from, const std::string& to) {
  std::ifstream in(dir / "config.json");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t at = text.find(from);
  ASSERT_NE(at, std::string::npos) << from;
  text.replace(at, from.size(), to);
  std::ofstream(dir / "config.json") << text;
}

std::string ImportError(const fs::path& dir, const fs::path& out) {
  auto r = ImportHfModel(dir.string(), out.string());
  return r.ok() ? "OK" : std::string(r.status().message());
}

TEST_F(HfImportTest, UnsupportedArchitectureListsTheSupportedOnes) {
  fs::path dir = CopyFixture("gpt2", tmp_ / "bert");
  EditConfig(dir, "GPT2LMHeadModel", "BertForMaskedLM");
  const std::string error = ImportError(dir, tmp_ / "out");
  EXPECT_NE(error.find("BertForMaskedLM"), std::string::npos) << error;
  EXPECT_NE(error.find("LlamaForCausalLM"), std::string::npos) << error;
  EXPECT_NE(error.find("config.json"), std::string::npos) << error;
}

TEST_F(HfImportTest, ConfigFieldsWeCannotExpressAreRefused) {
  fs::path dir = CopyFixture("llama", tmp_ / "act");
  EditConfig(dir, "\"silu\"", "\"gelu\"");
  EXPECT_NE(ImportError(dir, tmp_ / "o1").find("hidden_act"), std::string::npos);
  dir = CopyFixture("llama", tmp_ / "rope");
  EditConfig(dir, "\"llama3\"", "\"yarn\"");
  const std::string error = ImportError(dir, tmp_ / "o2");
  EXPECT_NE(error.find("yarn"), std::string::npos) << error;
  EXPECT_NE(error.find("llama3"), std::string::npos) << error;
}

TEST_F(HfImportTest, ConfigOfAnotherModelNamesTheTensor) {
  // More layers than the weights hold: the first missing tensor is named.
  fs::path dir = CopyFixture("llama", tmp_ / "layers");
  EditConfig(dir, "\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3");
  std::string error = ImportError(dir, tmp_ / "o1");
  EXPECT_NE(error.find("model.layers.2."), std::string::npos) << error;
  // Fewer layers: the unused tensors are named.
  dir = CopyFixture("llama", tmp_ / "fewer");
  EditConfig(dir, "\"num_hidden_layers\": 2", "\"num_hidden_layers\": 1");
  error = ImportError(dir, tmp_ / "o2");
  EXPECT_NE(error.find("model.layers.1."), std::string::npos) << error;
  // A wider MLP than stored: the shape mismatch names the parameter and both shapes.
  dir = CopyFixture("llama", tmp_ / "wide");
  EditConfig(dir, "\"intermediate_size\": 96", "\"intermediate_size\": 128");
  error = ImportError(dir, tmp_ / "o3");
  EXPECT_NE(error.find("h0.gate.weight"), std::string::npos) << error;
  EXPECT_NE(error.find("[96, 64]"), std::string::npos) << error;
}

TEST_F(HfImportTest, RefusesToOverwriteACheckpoint) {
  Import("gpt2", "ckpt");
  const std::string error = ImportError(fs::path(Fixtures()) / "gpt2", tmp_ / "ckpt");
  EXPECT_NE(error.find("--overwrite"), std::string::npos) << error;
}

}  // namespace
}  // namespace nats::interop
