// data/utf8.h
//
// Well-formed UTF-8 as RFC 3629 and Unicode's table 3-7 define it: no overlong forms, no UTF-16 surrogates
// (U+D800-U+DFFF), nothing above U+10FFFF. The one UTF-8 validator here: corpus cleaning (data/corpus.h), the
// GPT-2 tokenizer's split of ill-formed bytes (data/gpt2_tokenizer.h) and the mask-window JSON
// (runtime/mask_window.h) all use it.
#pragma once

#include <cstddef>
#include <string_view>

namespace nats::data {

// Length (1-4) of the well-formed UTF-8 sequence at the start of `s`; 0 when `s` is empty or starts with an
// ill-formed one (a stray continuation byte, C0/C1/F5-FF, an overlong form, a surrogate, > U+10FFFF, or a
// sequence cut short).
size_t Utf8SequenceLength(std::string_view s);

// Length of the longest well-formed UTF-8 prefix of `s`.
size_t ValidUtf8PrefixLength(std::string_view s);

bool IsValidUtf8(std::string_view s);

}  // namespace nats::data
