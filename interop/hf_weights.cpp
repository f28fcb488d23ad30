#include "interop/hf_weights.h"

#include <torch/torch.h>

#include <map>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nats/model_shape.h"
#include "runtime/config.h"

namespace nats::interop {
namespace {

// How one of our tensors is stored in the family's file.
enum class Layout {
  kSame,       // same shape and values
  kTranspose,  // Conv1D [in, out] <-> Linear [out, in]
  kRows,       // ours is the row-wise concatenation of the listed tensors (q, k, v -> qkv)
};

struct Rule {
  std::string ours;
  std::vector<std::string> hf;  // one name, or the parts of a kRows tensor in order
  Layout layout = Layout::kSame;
  std::vector<int64_t> part_rows;  // kRows: the rows of each part
};

std::vector<Rule> Rules(const config::Config& config, HfFamily family) {
  const config::ModelConfig& m = config.model();
  const int64_t head_dim = m.d_model() / m.n_head();
  const int64_t q_rows = m.n_head() * head_dim, kv_rows = ResolvedKvHeads(m) * head_dim;
  std::vector<Rule> rules;
  auto add = [&](std::string ours, std::string hf, Layout layout = Layout::kSame) {
    rules.push_back({std::move(ours), {std::move(hf)}, layout, {}});
  };
  const bool bias = m.bias(), qkv_bias = m.bias() || m.qkv_bias();
  const bool layer_norm = m.norm() == config::ModelConfig::LAYER_NORM;
  if (family == HfFamily::kGpt2) {
    add("wte.weight", "transformer.wte.weight");
    add("wpe.weight", "transformer.wpe.weight");
    for (int l = 0; l < m.n_layer(); ++l) {
      const std::string h = absl::StrCat("h", l, "."), p = absl::StrCat("transformer.h.", l, ".");
      add(h + "norm1.weight", p + "ln_1.weight");
      add(h + "norm1.bias", p + "ln_1.bias");
      add(h + "qkv.weight", p + "attn.c_attn.weight", Layout::kTranspose);
      add(h + "qkv.bias", p + "attn.c_attn.bias");
      add(h + "proj.weight", p + "attn.c_proj.weight", Layout::kTranspose);
      add(h + "proj.bias", p + "attn.c_proj.bias");
      if (LayerUsesNats(config, l)) {
        add(h + "scorer.proj.weight", p + "attn.nats_scorer.weight");
      }
      add(h + "norm2.weight", p + "ln_2.weight");
      add(h + "norm2.bias", p + "ln_2.bias");
      add(h + "fc.weight", p + "mlp.c_fc.weight", Layout::kTranspose);
      add(h + "fc.bias", p + "mlp.c_fc.bias");
      add(h + "fc_out.weight", p + "mlp.c_proj.weight", Layout::kTranspose);
      add(h + "fc_out.bias", p + "mlp.c_proj.bias");
    }
    add("ln_f.weight", "transformer.ln_f.weight");
    add("ln_f.bias", "transformer.ln_f.bias");
    if (!m.tie_embeddings()) add("lm_head.weight", "lm_head.weight");
    return rules;
  }
  add("wte.weight", "model.embed_tokens.weight");
  for (int l = 0; l < m.n_layer(); ++l) {
    const std::string h = absl::StrCat("h", l, "."), p = absl::StrCat("model.layers.", l, ".");
    add(h + "norm1.weight", p + "input_layernorm.weight");
    if (layer_norm) add(h + "norm1.bias", p + "input_layernorm.bias");
    rules.push_back(
        {h + "qkv.weight",
         {p + "self_attn.q_proj.weight", p + "self_attn.k_proj.weight", p + "self_attn.v_proj.weight"},
         Layout::kRows,
         {q_rows, kv_rows, kv_rows}});
    if (qkv_bias) {
      rules.push_back(
          {h + "qkv.bias",
           {p + "self_attn.q_proj.bias", p + "self_attn.k_proj.bias", p + "self_attn.v_proj.bias"},
           Layout::kRows,
           {q_rows, kv_rows, kv_rows}});
    }
    add(h + "proj.weight", p + "self_attn.o_proj.weight");
    if (bias) add(h + "proj.bias", p + "self_attn.o_proj.bias");
    if (LayerUsesNats(config, l)) {
      add(h + "scorer.proj.weight", p + "self_attn.nats_scorer.weight");
    }
    add(h + "norm2.weight", p + "post_attention_layernorm.weight");
    if (layer_norm) add(h + "norm2.bias", p + "post_attention_layernorm.bias");
    add(h + "gate.weight", p + "mlp.gate_proj.weight");
    add(h + "fc.weight", p + "mlp.up_proj.weight");
    add(h + "fc_out.weight", p + "mlp.down_proj.weight");
  }
  add("ln_f.weight", "model.norm.weight");
  if (layer_norm) add("ln_f.bias", "model.norm.bias");
  if (!m.tie_embeddings()) add("lm_head.weight", "lm_head.weight");
  return rules;
}

// Tensors Hugging Face files may hold that are not weights (attention masks, RoPE tables).
bool IsIgnorableBuffer(const std::string& name) {
  return absl::EndsWith(name, ".attn.bias") || absl::EndsWith(name, ".attn.masked_bias") ||
         absl::EndsWith(name, "rotary_emb.inv_freq");
}

}  // namespace

absl::StatusOr<NamedTensors> ImportWeights(const config::Config& config, HfFamily family,
                                           const SafetensorsCheckpoint& weights) {
  // GPT-2 files come with and without the "transformer." prefix (the original upload has none).
  std::map<std::string, std::string> stored;  // canonical name -> name in the file
  for (const std::string& name : weights.names()) {
    std::string canonical = name;
    if (family == HfFamily::kGpt2 && !absl::StartsWith(name, "transformer.") && name != "lm_head.weight") {
      canonical = "transformer." + name;
    }
    stored[canonical] = name;
  }
  std::set<std::string> used;
  auto get = [&](const std::string& canonical) -> absl::StatusOr<at::Tensor> {
    auto it = stored.find(canonical);
    if (it == stored.end()) {
      return absl::NotFoundError(absl::StrCat("the Hugging Face weights lack \"", canonical,
                                              "\", which the config's model needs (is config.json the one of "
                                              "these weights?)"));
    }
    used.insert(canonical);
    auto tensor = weights.Get(it->second);
    if (!tensor.ok()) return tensor.status();
    return tensor->to(at::kFloat);
  };
  NamedTensors out;
  for (const Rule& rule : Rules(config, family)) {
    std::vector<at::Tensor> parts;
    for (const std::string& name : rule.hf) {
      auto t = get(name);
      if (!t.ok()) return t.status();
      parts.push_back(*t);
    }
    at::Tensor ours;
    switch (rule.layout) {
      case Layout::kSame:
        ours = parts[0];
        break;
      case Layout::kTranspose:
        if (parts[0].dim() != 2) {
          return absl::InvalidArgumentError(
              absl::StrCat("\"", rule.hf[0], "\" must be a matrix, has shape ", c10::str(parts[0].sizes())));
        }
        ours = parts[0].t().contiguous();
        break;
      case Layout::kRows:
        for (size_t i = 0; i < parts.size(); ++i) {
          if (parts[i].dim() < 1 || parts[i].size(0) != rule.part_rows[i]) {
            return absl::InvalidArgumentError(
                absl::StrCat("\"", rule.hf[i], "\" has shape ", c10::str(parts[i].sizes()),
                             "; the config asks for ", rule.part_rows[i], " rows"));
          }
        }
        ours = at::cat(parts, 0);
        break;
    }
    out.emplace_back(rule.ours, ours);
  }
  std::vector<std::string> leftover;
  for (const auto& [canonical, name] : stored) {
    if (used.count(canonical) || IsIgnorableBuffer(canonical)) continue;
    // A tied model's file may also hold the head (a copy of the embeddings).
    if (canonical == "lm_head.weight" && config.model().tie_embeddings()) continue;
    leftover.push_back(name);
  }
  if (!leftover.empty()) {
    if (leftover.size() > 8) leftover.resize(8), leftover.push_back("...");
    return absl::InvalidArgumentError(
        absl::StrCat("the Hugging Face weights hold tensors the ", FamilyName(family),
                     " layout of this config does not use: ", absl::StrJoin(leftover, ", "),
                     " (a feature we do not import, or a config.json of another model)"));
  }
  return out;
}

absl::StatusOr<NamedTensors> ExportWeights(const config::Config& config, HfFamily family,
                                           const NamedTensors& ours) {
  std::map<std::string, at::Tensor> by_name(ours.begin(), ours.end());
  NamedTensors out;
  std::set<std::string> used;
  for (const Rule& rule : Rules(config, family)) {
    auto it = by_name.find(rule.ours);
    if (it == by_name.end()) {
      return absl::InternalError(
          absl::StrCat("the model has no parameter \"", rule.ours, "\" for ", rule.hf[0]));
    }
    used.insert(rule.ours);
    const at::Tensor t = it->second.detach().to(at::kCPU).contiguous();
    switch (rule.layout) {
      case Layout::kSame:
        out.emplace_back(rule.hf[0], t);
        break;
      case Layout::kTranspose:
        out.emplace_back(rule.hf[0], t.t().contiguous());
        break;
      case Layout::kRows: {
        int64_t row = 0;
        for (size_t i = 0; i < rule.hf.size(); ++i) {
          out.emplace_back(rule.hf[i], t.narrow(0, row, rule.part_rows[i]).contiguous());
          row += rule.part_rows[i];
        }
        break;
      }
    }
  }
  for (const auto& [name, tensor] : ours) {
    if (!used.count(name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("parameter \"", name, "\" has no place in the ", FamilyName(family), " layout"));
    }
  }
  return out;
}

}  // namespace nats::interop
