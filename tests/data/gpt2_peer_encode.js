// JavaScript peer for tests/data/gpt2_peer_test.cpp: encodes files with npm gpt-tokenizer@4.0.0
// (installed by launch/fetch_tokenizer.sh) using the r50k_base (= GPT-2) encoding explicitly.
//
// Usage: node gpt2_peer_encode.js NPM_PREFIX FILE...
// Prints one JSON array of token ids per FILE, one per line, in argument order.
// Files are read as UTF-8 (a BOM is kept as U+FEFF, as our C++ side keeps it) and encoded as plain
// text: special-token strings such as <|endoftext|> are ordinary text, as in our Encode.
'use strict';
const fs = require('fs');
const path = require('path');
const { createRequire } = require('module');

if (process.argv.length < 4) {
  process.stderr.write('usage: node gpt2_peer_encode.js NPM_PREFIX FILE...\n');
  process.exit(2);
}
const prefix = path.resolve(process.argv[2]);
// Resolve through the package's "exports" map ("./*" -> ./cjs/*.js) from the peer's own prefix,
// so the test never picks up some other installed copy.
const requireFromPrefix = createRequire(path.join(prefix, 'package.json'));
const r50k = requireFromPrefix('gpt-tokenizer/encoding/r50k_base');

const out = [];
for (const file of process.argv.slice(3)) {
  const text = fs.readFileSync(file, 'utf8');
  // An empty disallowed set makes special-token text plain text instead of an error.
  const ids = r50k.encode(text, { disallowedSpecial: new Set() });
  out.push(JSON.stringify(ids));
}
process.stdout.write(out.join('\n') + '\n');
