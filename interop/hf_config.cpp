#include "interop/hf_config.h"

#include <google/protobuf/text_format.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nats/model_shape.h"
#include "runtime/config.h"

namespace nats::interop {
namespace {

using Json = nlohmann::json;

// Field access with errors that name the file and the key.
class Fields {
 public:
  Fields(const Json& json, const std::string& path) : json_(json), path_(path) {}
  const std::string& path() const { return path_; }

  bool Present(const std::string& key) const { return json_.contains(key) && !json_.at(key).is_null(); }

  absl::StatusOr<int64_t> Int(const std::string& key, std::optional<int64_t> fallback = std::nullopt) const {
    if (!Present(key)) {
      if (fallback) return *fallback;
      return Missing(key);
    }
    const Json& v = json_.at(key);
    if (!v.is_number_integer()) return Wrong(key, "an integer", v);
    return v.get<int64_t>();
  }

  absl::StatusOr<double> Number(const std::string& key, std::optional<double> fallback = std::nullopt) const {
    if (!Present(key)) {
      if (fallback) return *fallback;
      return Missing(key);
    }
    const Json& v = json_.at(key);
    if (!v.is_number()) return Wrong(key, "a number", v);
    return v.get<double>();
  }

  absl::StatusOr<bool> Bool(const std::string& key, bool fallback) const {
    if (!Present(key)) return fallback;
    const Json& v = json_.at(key);
    if (!v.is_boolean()) return Wrong(key, "true or false", v);
    return v.get<bool>();
  }

  absl::StatusOr<std::string> String(const std::string& key, const std::string& fallback) const {
    if (!Present(key)) return fallback;
    const Json& v = json_.at(key);
    if (!v.is_string()) return Wrong(key, "a string", v);
    return v.get<std::string>();
  }

  absl::Status Missing(const std::string& key) const {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": \"", key, "\" is missing"));
  }
  absl::Status Wrong(const std::string& key, const std::string& want, const Json& got) const {
    return absl::InvalidArgumentError(
        absl::StrCat(path_, ": \"", key, "\" must be ", want, ", got ", got.dump()));
  }
  absl::Status Unsupported(const std::string& key, const std::string& why) const {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": \"", key, "\" ", why));
  }

 private:
  const Json& json_;
  std::string path_;
};

#define NATS_ASSIGN(lhs, expr)                  \
  auto lhs##_or = (expr);                       \
  if (!lhs##_or.ok()) return lhs##_or.status(); \
  auto lhs = *lhs##_or

struct ArchitectureInfo {
  const char* architecture;
  const char* model_type;
  HfFamily family;
  bool qkv_bias;  // Qwen2
};

constexpr ArchitectureInfo kArchitectures[] = {
    {"GPT2LMHeadModel", "gpt2", HfFamily::kGpt2, false},
    {"LlamaForCausalLM", "llama", HfFamily::kLlama, false},
    {"MistralForCausalLM", "mistral", HfFamily::kLlama, false},
    {"Qwen2ForCausalLM", "qwen2", HfFamily::kLlama, true},
};

absl::Status ParseGpt2(const Fields& f, HfModelConfig* out) {
  config::ModelConfig& m = *out->config.mutable_model();
  NATS_ASSIGN(vocab, f.Int("vocab_size"));
  NATS_ASSIGN(positions, f.Int("n_positions", 1024));
  NATS_ASSIGN(d, f.Int("n_embd"));
  NATS_ASSIGN(layers, f.Int("n_layer"));
  NATS_ASSIGN(heads, f.Int("n_head"));
  NATS_ASSIGN(inner, f.Int("n_inner", 4 * d));
  NATS_ASSIGN(eps, f.Number("layer_norm_epsilon", 1e-5));
  NATS_ASSIGN(act, f.String("activation_function", "gelu_new"));
  NATS_ASSIGN(tied, f.Bool("tie_word_embeddings", true));
  NATS_ASSIGN(scale_attn, f.Bool("scale_attn_weights", true));
  NATS_ASSIGN(by_layer, f.Bool("scale_attn_by_inverse_layer_idx", false));
  if (!scale_attn)
    return f.Unsupported("scale_attn_weights", "= false is not supported (scores scaled by 1/sqrt(d))");
  if (by_layer) return f.Unsupported("scale_attn_by_inverse_layer_idx", "= true is not supported");
  if (act == "gelu_new" || act == "gelu_pytorch_tanh" || act == "gelu_fast") {
    m.set_mlp(config::ModelConfig::GELU_TANH);
  } else if (act == "gelu") {
    m.set_mlp(config::ModelConfig::GELU);
  } else {
    return f.Unsupported(
        "activation_function",
        absl::StrCat("= \"", act, "\" is not supported (gelu_new, gelu_pytorch_tanh, gelu)"));
  }
  m.set_vocab_size(vocab);
  m.set_d_model(d);
  m.set_n_layer(layers);
  m.set_n_head(heads);
  m.set_n_kv_head(0);
  m.set_d_ff(inner);
  m.set_norm(config::ModelConfig::LAYER_NORM);
  m.set_norm_eps(eps);
  m.set_position(config::ModelConfig::LEARNED);
  m.set_max_position_embeddings(positions);
  m.set_context_length(positions);
  m.set_bias(true);
  m.set_tie_embeddings(tied);
  out->config.mutable_data()->set_tokenizer("gpt2");
  return absl::OkStatus();
}

absl::Status ParseRopeScaling(const Json& json, const std::string& path, config::ModelConfig* m) {
  if (!json.contains("rope_scaling") || json.at("rope_scaling").is_null()) return absl::OkStatus();
  const Json& r = json.at("rope_scaling");
  if (!r.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": \"rope_scaling\" must be an object or null"));
  }
  Fields f(r, absl::StrCat(path, " rope_scaling"));
  // transformers reads "rope_type", and "type" in older files.
  NATS_ASSIGN(type_old, f.String("type", "default"));
  NATS_ASSIGN(type, f.String("rope_type", type_old));
  config::RopeScaling& out = *m->mutable_rope_scaling();
  if (type == "default") return absl::OkStatus();
  NATS_ASSIGN(factor, f.Number("factor"));
  out.set_factor(factor);
  if (type == "linear") {
    out.set_kind(config::RopeScaling::LINEAR);
  } else if (type == "llama3") {
    out.set_kind(config::RopeScaling::LLAMA3);
    NATS_ASSIGN(low, f.Number("low_freq_factor"));
    NATS_ASSIGN(high, f.Number("high_freq_factor"));
    NATS_ASSIGN(original, f.Int("original_max_position_embeddings"));
    out.set_low_freq_factor(low);
    out.set_high_freq_factor(high);
    out.set_original_context_length(original);
  } else {
    return f.Unsupported("rope_type",
                         absl::StrCat("= \"", type, "\" is not supported (default, linear, llama3)"));
  }
  return absl::OkStatus();
}

absl::Status ParseLlama(const Json& json, const Fields& f, bool qkv_bias, HfModelConfig* out) {
  config::ModelConfig& m = *out->config.mutable_model();
  NATS_ASSIGN(vocab, f.Int("vocab_size"));
  NATS_ASSIGN(d, f.Int("hidden_size"));
  NATS_ASSIGN(ff, f.Int("intermediate_size"));
  NATS_ASSIGN(layers, f.Int("num_hidden_layers"));
  NATS_ASSIGN(heads, f.Int("num_attention_heads"));
  NATS_ASSIGN(kv_heads, f.Int("num_key_value_heads", heads));
  NATS_ASSIGN(eps, f.Number("rms_norm_eps", 1e-6));
  NATS_ASSIGN(theta, f.Number("rope_theta", 10000.0));
  NATS_ASSIGN(max_positions, f.Int("max_position_embeddings", 2048));
  NATS_ASSIGN(tied, f.Bool("tie_word_embeddings", false));
  NATS_ASSIGN(act, f.String("hidden_act", "silu"));
  NATS_ASSIGN(attention_bias, f.Bool("attention_bias", false));
  NATS_ASSIGN(mlp_bias, f.Bool("mlp_bias", false));
  if (act != "silu")
    return f.Unsupported("hidden_act", absl::StrCat("= \"", act, "\" is not supported (silu)"));
  if (attention_bias) {
    return f.Unsupported("attention_bias",
                         "= true is not supported (biases on q/k/v and o_proj); Qwen2's q/k/v "
                         "biases are");
  }
  if (mlp_bias) return f.Unsupported("mlp_bias", "= true is not supported");
  if (f.Present("head_dim")) {
    NATS_ASSIGN(head_dim, f.Int("head_dim"));
    if (heads <= 0 || head_dim * heads != d) {
      return f.Unsupported(
          "head_dim", absl::StrCat("= ", head_dim, " differs from hidden_size / num_attention_heads = ", d,
                                   " / ", heads, "; not supported"));
    }
  }
  m.set_vocab_size(vocab);
  m.set_d_model(d);
  m.set_d_ff(ff);
  m.set_n_layer(layers);
  m.set_n_head(heads);
  m.set_n_kv_head(kv_heads == heads ? 0 : kv_heads);
  m.set_norm(config::ModelConfig::RMS_NORM);
  m.set_norm_eps(eps);
  m.set_mlp(config::ModelConfig::SWIGLU);
  m.set_position(config::ModelConfig::ROPE);
  m.set_rope_theta(theta);
  m.set_qkv_bias(qkv_bias);
  m.set_tie_embeddings(tied);
  // The training window: the model's own limit, capped where a dense CPU step stays affordable; --set
  // model.context_length overrides it.
  m.set_context_length(static_cast<int32_t>(std::min<int64_t>(max_positions, 2048)));
  if (absl::Status s = ParseRopeScaling(json, f.path(), &m); !s.ok()) return s;
  if (json.contains("sliding_window") && json.at("sliding_window").is_number_integer() &&
      json.at("sliding_window").get<int64_t>() < max_positions) {
    out->notes.push_back(
        absl::StrCat("sliding_window = ", json.at("sliding_window").get<int64_t>(),
                     " is not imported: attention is full causal (use a cache policy instead)"));
  }
  out->notes.push_back(
      "no tokenizer of this family is built in: data.tokenizer stays \"" + out->config.data().tokenizer() +
      "\" unless config.json's \"nats\" object names one; set it with --set data.tokenizer=...");
  return absl::OkStatus();
}

// The "nats" extension object: attention kind, NAtS settings and tokenizer (absent in third-party files).
absl::Status ParseNatsExtension(const Json& json, const std::string& path, HfModelConfig* out) {
  if (!json.contains("nats")) return absl::OkStatus();
  const Json& n = json.at("nats");
  if (!n.is_object() || !n.contains("config") || !n.at("config").is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path,
                     ": \"nats\" must be an object with a \"config\" string (text-format nats and data "
                     "sections, as `nats export` writes it)"));
  }
  config::Config extension;
  if (!google::protobuf::TextFormat::ParseFromString(n.at("config").get<std::string>(), &extension)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": \"nats\".\"config\" is not a valid text-format config"));
  }
  if (extension.nats().ByteSizeLong() > 0) *out->config.mutable_nats() = extension.nats();
  out->config.mutable_model()->set_attention(extension.model().attention());
  if (extension.model().has_context_length()) {
    out->config.mutable_model()->set_context_length(extension.model().context_length());
  }
  if (extension.data().has_tokenizer())
    out->config.mutable_data()->set_tokenizer(extension.data().tokenizer());
  out->notes.erase(std::remove_if(out->notes.begin(), out->notes.end(),
                                  [](const std::string& note) { return note.rfind("no tokenizer", 0) == 0; }),
                   out->notes.end());
  return absl::OkStatus();
}

}  // namespace

std::string SupportedArchitectures() {
  std::vector<std::string> names;
  for (const ArchitectureInfo& a : kArchitectures) names.push_back(a.architecture);
  return absl::StrJoin(names, ", ");
}

const char* FamilyName(HfFamily family) { return family == HfFamily::kGpt2 ? "gpt2" : "llama"; }

HfFamily FamilyOf(const config::ModelConfig& model) {
  return model.position() == config::ModelConfig::LEARNED ? HfFamily::kGpt2 : HfFamily::kLlama;
}

absl::StatusOr<HfModelConfig> ParseHfConfig(const std::string& config_json, const std::string& path) {
  Json json = Json::parse(config_json, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object (a Hugging Face config.json)"));
  }
  Fields f(json, path);
  std::string architecture;
  if (json.contains("architectures") && json.at("architectures").is_array() &&
      !json.at("architectures").empty() && json.at("architectures")[0].is_string()) {
    architecture = json.at("architectures")[0].get<std::string>();
  }
  NATS_ASSIGN(model_type, f.String("model_type", ""));
  const ArchitectureInfo* info = nullptr;
  for (const ArchitectureInfo& a : kArchitectures) {
    if ((!architecture.empty() && architecture == a.architecture) ||
        (architecture.empty() && model_type == a.model_type)) {
      info = &a;
    }
  }
  if (info == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": architecture \"", architecture.empty() ? model_type : architecture,
                     "\" is not supported; nats import reads ", SupportedArchitectures()));
  }
  HfModelConfig out;
  // Set explicitly (not left at their defaults) so that a config imported from a third-party file and the
  // same model imported again after `nats export` compare equal field by field.
  out.config.mutable_model()->set_attention(config::ModelConfig::DENSE);
  out.config.mutable_data()->set_tokenizer(out.config.data().tokenizer());
  out.family = info->family;
  out.architecture = info->architecture;
  absl::Status s =
      info->family == HfFamily::kGpt2 ? ParseGpt2(f, &out) : ParseLlama(json, f, info->qkv_bias, &out);
  if (!s.ok()) return s;
  if (s = ParseNatsExtension(json, path, &out); !s.ok()) return s;
  if (s = ValidateConfig(out.config); !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": the imported model is not valid here: ", s.message()));
  }
  return out;
}

absl::StatusOr<std::string> HfConfigJson(const config::Config& config, HfFamily family) {
  const config::ModelConfig& m = config.model();
  Json json;
  if (family == HfFamily::kGpt2) {
    if (m.position() != config::ModelConfig::LEARNED || m.norm() != config::ModelConfig::LAYER_NORM ||
        m.mlp() == config::ModelConfig::SWIGLU || !m.bias() || ResolvedKvHeads(m) != m.n_head()) {
      return absl::InvalidArgumentError(
          "the gpt2 layout needs learned positions, LayerNorm, a GELU MLP, biases and no GQA "
          "(model.position, "
          "model.norm, model.mlp, model.bias, model.n_kv_head)");
    }
    json["architectures"] = {"GPT2LMHeadModel"};
    json["model_type"] = "gpt2";
    json["vocab_size"] = m.vocab_size();
    json["n_positions"] = MaxLearnedPositions(m);
    json["n_ctx"] = MaxLearnedPositions(m);
    json["n_embd"] = m.d_model();
    json["n_layer"] = m.n_layer();
    json["n_head"] = m.n_head();
    json["n_inner"] = ResolvedFfnWidth(m);
    json["layer_norm_epsilon"] = m.norm_eps();
    json["activation_function"] = m.mlp() == config::ModelConfig::GELU_TANH ? "gelu_new" : "gelu";
    json["tie_word_embeddings"] = m.tie_embeddings();
    json["scale_attn_weights"] = true;
    json["bos_token_id"] = 50256;
    json["eos_token_id"] = 50256;
  } else {
    if (m.position() != config::ModelConfig::ROPE || m.norm() != config::ModelConfig::RMS_NORM ||
        m.mlp() != config::ModelConfig::SWIGLU || m.bias()) {
      return absl::InvalidArgumentError(
          "the llama layout needs RoPE, RMSNorm, SwiGLU and no biases except q/k/v (model.position, "
          "model.norm, "
          "model.mlp, model.bias)");
    }
    json["architectures"] = {m.qkv_bias() ? "Qwen2ForCausalLM" : "LlamaForCausalLM"};
    json["model_type"] = m.qkv_bias() ? "qwen2" : "llama";
    json["vocab_size"] = m.vocab_size();
    json["hidden_size"] = m.d_model();
    json["intermediate_size"] = ResolvedFfnWidth(m);
    json["num_hidden_layers"] = m.n_layer();
    json["num_attention_heads"] = m.n_head();
    json["num_key_value_heads"] = ResolvedKvHeads(m);
    json["head_dim"] = m.d_model() / m.n_head();
    json["rms_norm_eps"] = m.norm_eps();
    json["rope_theta"] = m.rope_theta();
    json["max_position_embeddings"] = m.context_length();
    json["tie_word_embeddings"] = m.tie_embeddings();
    json["hidden_act"] = "silu";
    json["attention_bias"] = false;
    json["mlp_bias"] = false;
    const config::RopeScaling& r = m.rope_scaling();
    if (r.kind() == config::RopeScaling::LINEAR) {
      json["rope_scaling"] = {{"rope_type", "linear"}, {"factor", r.factor()}};
    } else if (r.kind() == config::RopeScaling::LLAMA3) {
      json["rope_scaling"] = {{"rope_type", "llama3"},
                              {"factor", r.factor()},
                              {"low_freq_factor", r.low_freq_factor()},
                              {"high_freq_factor", r.high_freq_factor()},
                              {"original_max_position_embeddings", r.original_context_length()}};
    } else {
      json["rope_scaling"] = nullptr;
    }
  }
  json["torch_dtype"] = "float32";
  // Our extension: what Hugging Face has no field for, so that an export imports back to the same config.
  config::Config extension;
  *extension.mutable_nats() = config.nats();
  extension.mutable_model()->set_attention(m.attention());
  extension.mutable_model()->set_context_length(m.context_length());
  extension.mutable_data()->set_tokenizer(config.data().tokenizer());
  std::string text;
  google::protobuf::TextFormat::Printer printer;
  printer.SetSingleLineMode(true);
  printer.PrintToString(extension, &text);
  json["nats"] = {
      {"config", text},
      {"scorer_tensors", family == HfFamily::kGpt2 ? "transformer.h.{i}.attn.nats_scorer.weight"
                                                   : "model.layers.{i}.self_attn.nats_scorer.weight"}};
  return json.dump(2) + "\n";
}

}  // namespace nats::interop
