#include "runtime/config.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "data/fingerprint.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"
#include "nats/model_shape.h"

namespace nats {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

// Collects text-format parse errors with their line so the user can find them.
class ErrorCollector : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, int column, const std::string& message) override {
    if (!first_.empty()) return;
    first_ = absl::StrCat("line ", line + 1, ", column ", column + 1, ": ", message);
  }
  const std::string& first() const { return first_; }

 private:
  std::string first_;
};

std::string FieldList(const Descriptor* d) {
  std::vector<std::string> names;
  for (int i = 0; i < d->field_count(); ++i) names.push_back(d->field(i)->name());
  return absl::StrJoin(names, ", ");
}

absl::Status Positive(const std::string& path, double value) {
  if (value > 0) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(path, " = ", value, ": must be > 0"));
}

absl::Status NonNegative(const std::string& path, double value) {
  if (value >= 0) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(path, " = ", value, ": must be >= 0"));
}

}  // namespace

namespace {

// Reads a text-format file into *message; `kind` and `where` fill the message of a file that cannot be
// opened.
absl::Status ParseTextFile(const std::string& path, const char* kind, const char* where, Message* message) {
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat(path, ": cannot open ", kind, " file; pass an existing .textproto (see ", where, ")"));
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  google::protobuf::TextFormat::Parser parser;
  ErrorCollector errors;
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(buffer.str(), message)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", errors.first()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<config::Config> LoadConfigFile(const std::string& path) {
  config::Config cfg;
  if (absl::Status s = ParseTextFile(path, "config", "configs/", &cfg); !s.ok()) return s;
  return cfg;
}

absl::StatusOr<config::Sweep> LoadSweepFile(const std::string& path) {
  config::Sweep sweep;
  if (absl::Status s = ParseTextFile(path, "sweep", "configs/sweeps/", &sweep); !s.ok()) return s;
  return sweep;
}

absl::Status ApplyOverride(std::string_view assignment_view, config::Config* cfg) {
  // Debian's Abseil has its own string_view (not std::string_view): work on a std::string.
  const std::string assignment(assignment_view);
  const size_t eq = assignment.find('=');
  if (eq == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("--set ", assignment, ": expected section.field=value, e.g. optim.lr=3e-4"));
  }
  const std::string path(absl::StripAsciiWhitespace(assignment.substr(0, eq)));
  std::string value(absl::StripAsciiWhitespace(assignment.substr(eq + 1)));
  std::vector<std::string> parts = absl::StrSplit(path, '.');
  Message* msg = cfg;
  for (size_t i = 0; i < parts.size(); ++i) {
    const Descriptor* desc = msg->GetDescriptor();
    const FieldDescriptor* field = desc->FindFieldByName(parts[i]);
    if (field == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("--set ", path, ": unknown field '", parts[i], "' in ",
                                                     desc->name(), "; known fields: ", FieldList(desc)));
    }
    if (i + 1 < parts.size()) {
      if (field->type() != FieldDescriptor::TYPE_MESSAGE || field->is_repeated()) {
        return absl::InvalidArgumentError(
            absl::StrCat("--set ", path, ": '", parts[i], "' is not a section and has no sub-fields"));
      }
      msg = msg->GetReflection()->MutableMessage(msg, field);
      continue;
    }
    if (field->type() == FieldDescriptor::TYPE_MESSAGE) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--set ", path, ": is a section; set one of its fields: ", FieldList(field->message_type())));
    }
    // Let text format do the value parsing (enums by name, numbers, bools, lists).
    if (field->type() == FieldDescriptor::TYPE_STRING && (value.empty() || value.front() != '"')) {
      value = absl::StrCat("\"", absl::CEscape(value), "\"");
    }
    if (field->is_repeated()) {
      msg->GetReflection()->ClearField(msg, field);
      if (value.empty() || value.front() != '[') value = absl::StrCat("[", value, "]");
    }
    std::unique_ptr<Message> scratch(msg->New());
    ErrorCollector errors;
    google::protobuf::TextFormat::Parser parser;
    parser.RecordErrorsTo(&errors);
    if (!parser.ParseFromString(absl::StrCat(field->name(), ": ", value), scratch.get())) {
      std::string hint;
      if (field->type() == FieldDescriptor::TYPE_ENUM) {
        std::vector<std::string> names;
        for (int v = 0; v < field->enum_type()->value_count(); ++v)
          names.push_back(field->enum_type()->value(v)->name());
        hint = absl::StrCat("; allowed: ", absl::StrJoin(names, ", "));
      }
      return absl::InvalidArgumentError(absl::StrCat("--set ", path, "=", value, ": ", errors.first(), hint));
    }
    msg->MergeFrom(*scratch);
  }
  return absl::OkStatus();
}

namespace {
constexpr int kMaxContextLength = 1 << 16;
constexpr int kMaxModelDim = 1 << 20;
}  // namespace

namespace {

// Learned position table, RoPE scaling and the norm epsilon (the fields the Hugging Face families need).
absl::Status ValidatePositions(const config::ModelConfig& m) {
  if (!(m.norm_eps() > 0)) {
    return absl::InvalidArgumentError(absl::StrCat("model.norm_eps = ", m.norm_eps(), ": must be > 0"));
  }
  if (m.max_position_embeddings() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("model.max_position_embeddings = ", m.max_position_embeddings(), ": must be >= 0"));
  }
  if (m.position() == config::ModelConfig::LEARNED && m.context_length() > MaxLearnedPositions(m)) {
    return absl::InvalidArgumentError(absl::StrCat("model.context_length = ", m.context_length(),
                                                   " exceeds the learned position table (model."
                                                   "max_position_embeddings = ",
                                                   m.max_position_embeddings(),
                                                   "); train on windows of at most that length"));
  }
  const config::RopeScaling& r = m.rope_scaling();
  if (r.kind() != config::RopeScaling::NONE && !(r.factor() > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("model.rope_scaling.factor = ", r.factor(), ": must be > 0"));
  }
  if (r.kind() == config::RopeScaling::LLAMA3 &&
      !(r.low_freq_factor() > 0 && r.high_freq_factor() > r.low_freq_factor() &&
        r.original_context_length() > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("model.rope_scaling (LLAMA3) needs 0 < low_freq_factor < high_freq_factor and "
                     "original_context_length > 0, "
                     "got ",
                     r.low_freq_factor(), ", ", r.high_freq_factor(), ", ", r.original_context_length()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateConfig(const config::Config& c) {
  const auto& m = c.model();
  absl::Status s;
  for (auto [path, v] : std::vector<std::pair<std::string, double>>{
           {"model.vocab_size", m.vocab_size()},
           {"model.n_layer", m.n_layer()},
           {"model.n_head", m.n_head()},
           {"model.d_model", m.d_model()},
           {"model.context_length", m.context_length()},
           {"model.rope_theta", m.rope_theta()},
           {"model.init_std", m.init_std()},
           {"optim.lr", c.optim().lr()},
           {"optim.eps", c.optim().eps()},
           {"train.steps", c.train().steps()},
           {"train.batch_size", c.train().batch_size()},
           // Evaluation always runs at the end (train.eval_interval = 0 only drops the periodic ones).
           {"train.eval_windows", c.train().eval_windows()},
           {"nats.tau", c.nats().tau()},
           {"parallel.sp", c.parallel().sp()},
           {"parallel.bucket_mb", c.parallel().bucket_mb()},
           {"parallel.timeout_s", c.parallel().timeout_s()}}) {
    if (!(s = Positive(path, v)).ok()) return s;
  }
  for (auto [path, v] : std::vector<std::pair<std::string, double>>{
           {"model.n_kv_head", m.n_kv_head()},
           {"model.d_ff", m.d_ff()},
           {"optim.warmup_steps", c.optim().warmup_steps()},
           {"optim.weight_decay", c.optim().weight_decay()},
           {"optim.grad_clip", c.optim().grad_clip()},
           {"train.micro_batch_size", c.train().micro_batch_size()},
           {"train.eval_interval", c.train().eval_interval()},
           {"train.log_interval", c.train().log_interval()},
           {"train.threads", c.train().threads()},
           {"nats.window", c.nats().window()},
           {"nats.lambda", c.nats().lambda()},
           {"nats.global_bias", c.nats().global_bias()},
           {"parallel.dp", c.parallel().dp()},
           {"checkpoint.interval_steps", c.checkpoint().interval_steps()},
           {"checkpoint.interval_minutes", c.checkpoint().interval_minutes()},
           {"checkpoint.keep_last", c.checkpoint().keep_last()},
           {"checkpoint.keep_every", c.checkpoint().keep_every()}}) {
    if (!(s = NonNegative(path, v)).ok()) return s;
  }
  // Sanity bounds: far above anything this trainer runs, low enough that sizes derived from them (the RoPE
  // table, dense [B, n_head, T, T] attention scores, 8/3 d_model for SwiGLU) cannot overflow or ask the
  // allocator for terabytes with a message that names no field.
  if (m.context_length() > kMaxContextLength) {
    const double dense_scores = 4.0 *
                                std::max(1, c.train().micro_batch_size() > 0 ? c.train().micro_batch_size()
                                                                             : c.train().batch_size()) *
                                m.n_head() * static_cast<double>(m.context_length()) * m.context_length();
    return absl::InvalidArgumentError(absl::StrCat(
        "model.context_length = ", m.context_length(), " exceeds the supported maximum ", kMaxContextLength,
        " (a dense attention layer alone would hold micro-batch x model.n_head x T^2 float scores = ",
        absl::SixDigits(dense_scores / 1e9), " GB); use a shorter context"));
  }
  for (auto [path, v] : std::vector<std::pair<std::string, int>>{{"model.vocab_size", m.vocab_size()},
                                                                 {"model.d_model", m.d_model()},
                                                                 {"model.d_ff", m.d_ff()},
                                                                 {"model.n_head", m.n_head()},
                                                                 {"model.n_layer", m.n_layer()}}) {
    if (v > kMaxModelDim) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, " = ", v, " exceeds the supported maximum ", kMaxModelDim));
    }
  }
  if (m.d_model() % m.n_head() != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("model.d_model = ", m.d_model(), " must be a multiple of model.n_head = ", m.n_head()));
  }
  const int head_dim = m.d_model() / m.n_head();
  if (absl::Status pos = ValidatePositions(m); !pos.ok()) return pos;
  if (m.position() == config::ModelConfig::ROPE && head_dim % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("model.d_model / model.n_head = ", head_dim, " must be even for RoPE"));
  }
  if (m.n_head() % ResolvedKvHeads(m) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model.n_head = ", m.n_head(), " must be a multiple of model.n_kv_head = ", m.n_kv_head()));
  }
  if (c.optim().beta1() < 0 || c.optim().beta1() >= 1 || c.optim().beta2() < 0 || c.optim().beta2() >= 1) {
    return absl::InvalidArgumentError("optim.beta1 and optim.beta2 must be in [0, 1)");
  }
  if (c.optim().min_lr_ratio() < 0 || c.optim().min_lr_ratio() > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("optim.min_lr_ratio = ", c.optim().min_lr_ratio(), ": must be in [0, 1]"));
  }
  if (c.optim().decay_fraction() < 0 || c.optim().decay_fraction() > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("optim.decay_fraction = ", c.optim().decay_fraction(), ": must be in [0, 1]"));
  }
  if (c.parallel().sp() > 1 && c.parallel().sp_exchange() == config::ParallelConfig::RETAINED &&
      c.model().attention() == config::ModelConfig::NATS &&
      c.nats().grad_mode() == config::NatsConfig::UNMASKED) {
    return absl::InvalidArgumentError(
        "nats.grad_mode = UNMASKED normalises by the softmax over every earlier key, which "
        "parallel.sp_exchange = RETAINED never moves; use parallel.sp_exchange = FULL or nats.grad_mode = "
        "CLIPPED");
  }
  for (int layer : c.nats().layers()) {
    if (layer < 0 || layer >= m.n_layer()) {
      return absl::InvalidArgumentError(
          absl::StrCat("nats.layers contains ", layer, ": layers are 0..", m.n_layer() - 1));
    }
  }
  if (c.train().micro_batch_size() > 0 && c.train().batch_size() % c.train().micro_batch_size() != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("train.batch_size = ", c.train().batch_size(),
                     " must be a multiple of train.micro_batch_size = ", c.train().micro_batch_size()));
  }
  if (c.parallel().zero_stage() != 0 && c.parallel().zero_stage() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("parallel.zero_stage = ", c.parallel().zero_stage(), ": supported values are 0 and 1"));
  }
  if (c.data().tokenizer() != "gpt2" && c.data().tokenizer() != "byte") {
    return absl::InvalidArgumentError(
        absl::StrCat("data.tokenizer = '", c.data().tokenizer(), "': allowed values are gpt2 and byte"));
  }
  if (c.train().run_dir().empty()) return absl::InvalidArgumentError("train.run_dir must not be empty");
  // Post-training (docs/posttraining.md).
  if (c.train().objective() == config::TrainConfig::DISTILL && m.attention() != config::ModelConfig::NATS) {
    return absl::InvalidArgumentError(
        "train.objective = DISTILL trains the NAtS scorers against the same model with dense attention, but "
        "model.attention = DENSE has no scorers; set model.attention = NATS (and train.init_from to the "
        "dense model's checkpoint)");
  }
  if (!(c.train().distill_kl_weight() >= 0) || !std::isfinite(c.train().distill_kl_weight())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "train.distill_kl_weight = ", c.train().distill_kl_weight(), ": must be a finite number >= 0"));
  }
  if (!(c.train().peak_gflops() >= 0) || !std::isfinite(c.train().peak_gflops())) {
    return absl::InvalidArgumentError(
        absl::StrCat("train.peak_gflops = ", c.train().peak_gflops(),
                     ": must be a finite number >= 0 (GFLOP/s of one rank; 0: `nats bench peak`'s file)"));
  }
  const double target = c.nats().target_kv_fraction();
  if (!(target >= 0 && target < 1)) {
    return absl::InvalidArgumentError(absl::StrCat("nats.target_kv_fraction = ", target,
                                                   ": must be in [0, 1) (0 keeps nats.lambda fixed)"));
  }
  if (target > 0) {
    if (m.attention() != config::ModelConfig::NATS) {
      return absl::InvalidArgumentError(
          absl::StrCat("nats.target_kv_fraction = ", target,
                       " controls the KV fraction of NAtS layers, but model.attention = DENSE keeps every "
                       "token; set model.attention = NATS or nats.target_kv_fraction = 0"));
    }
    if (!(c.nats().target_kv_gain() > 0) || !std::isfinite(c.nats().target_kv_gain())) {
      return absl::InvalidArgumentError(
          absl::StrCat("nats.target_kv_gain = ", c.nats().target_kv_gain(), ": must be a finite number > 0"));
    }
  }
  return absl::OkStatus();
}

std::string ConfigToText(const config::Config& cfg) {
  // Fill in defaults so the printed config is the complete effective one.
  config::Config full = cfg;
  for (Message* section : std::vector<Message*>{
           full.mutable_model(), full.mutable_nats(), full.mutable_data(), full.mutable_optim(),
           full.mutable_train(), full.mutable_parallel(), full.mutable_checkpoint()}) {
    const Reflection* r = section->GetReflection();
    const Descriptor* d = section->GetDescriptor();
    for (int i = 0; i < d->field_count(); ++i) {
      const FieldDescriptor* f = d->field(i);
      if (f->is_repeated() || r->HasField(*section, f)) continue;
      switch (f->cpp_type()) {
        case FieldDescriptor::CPPTYPE_INT32:
          r->SetInt32(section, f, r->GetInt32(*section, f));
          break;
        case FieldDescriptor::CPPTYPE_INT64:
          r->SetInt64(section, f, r->GetInt64(*section, f));
          break;
        case FieldDescriptor::CPPTYPE_UINT32:
          r->SetUInt32(section, f, r->GetUInt32(*section, f));
          break;
        case FieldDescriptor::CPPTYPE_UINT64:
          r->SetUInt64(section, f, r->GetUInt64(*section, f));
          break;
        case FieldDescriptor::CPPTYPE_DOUBLE:
          r->SetDouble(section, f, r->GetDouble(*section, f));
          break;
        case FieldDescriptor::CPPTYPE_FLOAT:
          r->SetFloat(section, f, r->GetFloat(*section, f));
          break;
        case FieldDescriptor::CPPTYPE_BOOL:
          r->SetBool(section, f, r->GetBool(*section, f));
          break;
        case FieldDescriptor::CPPTYPE_ENUM:
          r->SetEnum(section, f, r->GetEnum(*section, f));
          break;
        case FieldDescriptor::CPPTYPE_STRING:
          r->SetString(section, f, r->GetString(*section, f));
          break;
        default:
          break;
      }
    }
  }
  std::string out;
  google::protobuf::TextFormat::PrintToString(full, &out);
  return out;
}

uint64_t ConfigHash(const config::Config& cfg) { return data::Fingerprint64(ConfigToText(cfg)); }

std::string ConfigHashText(const config::Config& config) {
  return absl::StrFormat("%016x", ConfigHash(config));
}

bool LayerUsesNats(const config::Config& c, int layer) {
  if (c.model().attention() != config::ModelConfig::NATS) return false;
  if (c.nats().layers_size() == 0) return true;
  for (int l : c.nats().layers()) {
    if (l == layer) return true;
  }
  return false;
}

namespace {

// The text-format value of field `f` of `m` (a list "[a,b]" for repeated fields). Text is what is
// compared: protobuf prints doubles in their shortest round-trip form, so equal text is equal value.
std::string FieldText(const google::protobuf::Message& m, const google::protobuf::FieldDescriptor* f) {
  using google::protobuf::TextFormat;
  if (!f->is_repeated()) {
    std::string v;
    TextFormat::PrintFieldValueToString(m, f, -1, &v);
    return v;
  }
  std::vector<std::string> items;
  for (int k = 0; k < m.GetReflection()->FieldSize(m, f); ++k) {
    std::string v;
    TextFormat::PrintFieldValueToString(m, f, k, &v);
    items.push_back(v);
  }
  return absl::StrCat("[", absl::StrJoin(items, ","), "]");
}

void DiffMessages(const google::protobuf::Message& a, const google::protobuf::Message& b,
                  const std::string& prefix, std::vector<ConfigChange>* out) {
  const google::protobuf::Descriptor* d = a.GetDescriptor();
  for (int i = 0; i < d->field_count(); ++i) {
    const google::protobuf::FieldDescriptor* f = d->field(i);
    const std::string path = absl::StrCat(prefix, f->name());
    if (!f->is_repeated() && f->cpp_type() == google::protobuf::FieldDescriptor::CPPTYPE_MESSAGE) {
      DiffMessages(a.GetReflection()->GetMessage(a, f), b.GetReflection()->GetMessage(b, f), path + ".", out);
      continue;
    }
    std::string va = FieldText(a, f), vb = FieldText(b, f);
    if (va != vb) out->push_back(ConfigChange{path, std::move(va), std::move(vb)});
  }
}

}  // namespace

std::vector<ConfigChange> DiffConfigs(const config::Config& saved, const config::Config& current) {
  std::vector<ConfigChange> out;
  DiffMessages(saved, current, "", &out);
  return out;
}

}  // namespace nats
