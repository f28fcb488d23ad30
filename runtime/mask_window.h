// runtime/mask_window.h
//
// The learned token types of one validation window, for the attention-mask picture of `nats plot`
// (launch/plot_runs.py draws the mask of docs/method.md 3 from them). The types are those inference uses
// (docs/method.md 2: argmax + global bias, position 0 global), from an eval-mode forward of the first
// `max_tokens` tokens of the first validation window. Types depend only on earlier tokens, so these positions
// have the types a forward of the whole window gives them. The file is one JSON object:
//   {"kind": "mask_window", "step": S, "data": "<val shard>", "window": W, "tokens": [ids...],
//    "pieces": ["<text of each token>", ...],
//    "layers": [{"layer": 0, "nats": true, "types": ["GLS...", ...]}, {"layer": 1, "nats": false}, ...]}
// `types` holds one string per KV head with one letter per position: G global, L local, S sliding. `pieces`
// are each token decoded alone, invalid UTF-8 (a token holding part of a character) replaced by U+FFFD.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "data/token_corpus.h"
#include "data/tokenizer.h"
#include "nats/transformer.h"

namespace nats {

// Runs the forward (no gradients; the training flag is restored) and writes the file at `path` (temp +
// rename). `tokenizer` may be null (then "pieces" is empty). The model must have no sequence-parallel chunk
// attention set. An error names the path.
absl::Status WriteMaskWindow(Transformer& model, const data::TokenCorpus& val,
                             const data::Tokenizer* tokenizer, int64_t step, int64_t max_tokens,
                             const std::string& path);

}  // namespace nats
