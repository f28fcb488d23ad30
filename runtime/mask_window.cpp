// The learned types of the first validation window as JSON (runtime/mask_window.h).
#include "runtime/mask_window.h"

#include <torch/torch.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string_view>
#include <system_error>
#include <vector>

#include "absl/strings/str_cat.h"
#include "data/loader.h"
#include "data/utf8.h"
#include "nats/token_type.h"
#include "runtime/metrics_log.h"

namespace nats {
namespace {

// `s` with every byte that does not start or continue a well-formed UTF-8 sequence replaced by U+FFFD (a
// GPT-2 token may hold part of a character; JSON must be valid UTF-8).
std::string ValidUtf8(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    const size_t n = data::Utf8SequenceLength(std::string_view(s).substr(i));
    if (n > 0) {
      out.append(s, i, n);
      i += n;
    } else {
      out += "\xef\xbf\xbd";
      ++i;
    }
  }
  return out;
}

}  // namespace

absl::Status WriteMaskWindow(Transformer& model, const data::TokenCorpus& val,
                             const data::Tokenizer* tokenizer, int64_t step, int64_t max_tokens,
                             const std::string& path) {
  const int64_t seq = model->spec().model.context_length();
  auto rows = data::EvalWindows(val, seq, 0, 1);
  if (!rows.ok()) return rows.status();
  const int64_t n = std::min<int64_t>(max_tokens, seq);
  std::vector<int32_t> ids(rows->begin(), rows->begin() + n);

  std::vector<at::Tensor> types;
  {
    torch::NoGradGuard no_grad;
    const bool was_training = model->is_training();
    model->eval();
    at::Tensor tokens =
        torch::tensor(std::vector<int64_t>(ids.begin(), ids.end()), torch::kInt64).unsqueeze(0);
    model->forward(tokens);
    model->train(was_training);
    types = model->LastLayerTypes();
  }

  std::string json =
      absl::StrCat("{\"kind\":\"mask_window\",\"step\":", step, ",\"data\":\"", JsonEscape(val.path()),
                   "\",\"window\":", model->spec().nats.window(), ",\"tokens\":[");
  for (int64_t i = 0; i < n; ++i) absl::StrAppend(&json, i ? "," : "", ids[i]);
  json += "],\"pieces\":[";
  for (int64_t i = 0; tokenizer != nullptr && i < n; ++i) {
    auto piece = tokenizer->Decode(absl::MakeConstSpan(&ids[i], 1));
    absl::StrAppend(&json, i ? "," : "", "\"", JsonEscape(ValidUtf8(piece.ok() ? *piece : "")), "\"");
  }
  json += "],\"layers\":[";
  for (size_t l = 0; l < types.size(); ++l) {
    absl::StrAppend(&json, l ? "," : "", "{\"layer\":", l,
                    ",\"nats\":", types[l].defined() ? "true" : "false");
    if (types[l].defined()) {
      at::Tensor t = types[l][0].to(at::kChar).contiguous();  // [H_kv, n]
      json += ",\"types\":[";
      for (int64_t h = 0; h < t.size(0); ++h) {
        std::string letters(static_cast<size_t>(n), '?');
        const int8_t* row = t[h].data_ptr<int8_t>();
        for (int64_t i = 0; i < n; ++i) {
          TORCH_INTERNAL_ASSERT(row[i] >= 0 && row[i] < kNumTokenTypes, "token type ", int(row[i]));
          letters[i] = "GLS"[row[i]];
        }
        absl::StrAppend(&json, h ? "," : "", "\"", letters, "\"");
      }
      json += "]";
    }
    json += "}";
  }
  json += "]}\n";

  const std::string temp = path + ".tmp";
  {
    std::ofstream out(temp, std::ios::out | std::ios::trunc);
    out << json;
    out.close();
    if (!out) return absl::InternalError(absl::StrCat(temp, ": cannot write the mask window"));
  }
  std::error_code ec;
  std::filesystem::rename(temp, path, ec);
  if (ec) return absl::InternalError(absl::StrCat(path, ": cannot write the mask window: ", ec.message()));
  return absl::OkStatus();
}

}  // namespace nats
