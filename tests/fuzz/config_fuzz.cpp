// libFuzzer target: the run configuration (runtime/config.h) as `nats train` reads it: a text-format file
// (LoadConfigFile) or `--set section.field=value` overrides (ApplyOverride), then ValidateConfig.
//
// Input: [mode byte][text...]. Even mode: the text is a config file. Odd mode: each line of the text is one
// --set assignment applied in order to the default config.
// Contracts checked beyond "no crash": a config that validates prints (ConfigToText) to a file that loads
// back to the same config (same ConfigHash), and the model dimensions derived from it (nats/model_shape.h)
// are positive.
#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/strings/str_split.h"
#include "nats/model_shape.h"
#include "runtime/config.h"
#include "tests/fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  nats::fuzz::FuzzInput in(data, size);
  const uint8_t mode = in.Byte();
  const std::string_view text = in.Rest();
  const std::string& dir = nats::fuzz::ScratchDir();

  nats::config::Config cfg;
  if (mode % 2 == 0) {
    const std::string path = dir + "/config.textproto";
    nats::fuzz::WriteFileOrDie(path, text);
    auto loaded = nats::LoadConfigFile(path);
    if (!loaded.ok()) return 0;
    cfg = *std::move(loaded);
  } else {
    // Debian's Abseil has its own absl::string_view, not std::string_view.
    for (absl::string_view line : absl::StrSplit(absl::string_view(text.data(), text.size()), '\n')) {
      if (!nats::ApplyOverride(std::string_view(line.data(), line.size()), &cfg).ok()) return 0;
    }
  }
  if (!nats::ValidateConfig(cfg).ok()) return 0;

  const std::string printed = nats::ConfigToText(cfg);
  const std::string path = dir + "/printed.textproto";
  nats::fuzz::WriteFileOrDie(path, printed);
  auto reloaded = nats::LoadConfigFile(path);
  FUZZ_CHECK(reloaded.ok());
  FUZZ_CHECK(nats::ConfigHash(*reloaded) == nats::ConfigHash(cfg));
  FUZZ_CHECK(nats::ValidateConfig(*reloaded).ok());

  FUZZ_CHECK(nats::ResolvedKvHeads(cfg.model()) > 0);
  FUZZ_CHECK(nats::ResolvedFfnWidth(cfg.model()) > 0);
  for (int layer = 0; layer < std::min(cfg.model().n_layer(), 64); ++layer)
    (void)nats::LayerUsesNats(cfg, layer);
  return 0;
}
