#!/usr/bin/python3
"""An independent safetensors writer/reader for the C++ tests (interop/safetensors.h).

The format is written out by hand here (struct + json; torch 1.13 only for tensors), not with the
safetensors package, so that the C++ reader is checked against a second implementation of the spec
(wave2-notes.md section E): u64 little-endian header length N, N bytes of JSON padded with spaces so that
8 + N is a multiple of 8, then the tensors' little-endian bytes back to back.

Usage (python3 is /usr/bin/python3, the one with torch):
  safetensors_writer.py fixtures OUT_DIR      all of the below into OUT_DIR/{roundtrip,sharded,malformed}
  safetensors_writer.py roundtrip OUT_DIR     OUT_DIR/roundtrip.safetensors + OUT_DIR/expected/ (manifest.json,
                                              one raw .bin per tensor, values as float64 JSON lists)
  safetensors_writer.py sharded OUT_DIR       OUT_DIR/checkpoint/ (2 shards + model.safetensors.index.json)
                                              + OUT_DIR/expected/
  safetensors_writer.py malformed OUT_DIR     bad files + OUT_DIR/cases.json: [{file, expected, kind}]
  safetensors_writer.py verify FILE EXPECTED_DIR
  safetensors_writer.py verify-checkpoint DIR EXPECTED_DIR [--max-shard-bytes M] [--min-shards K]
      read FILE / DIR by hand, check the layout rules and that every tensor's bytes, dtype and shape and the
      metadata equal EXPECTED_DIR's manifest; exit 0, or print the first difference and exit 1.

As a module: write_safetensors(path, [(name, tensor)], metadata), write_sharded(dir, tensors, shards,
metadata), read_safetensors(path) -> (entries, metadata, data bytes), read_tensor(...).
"""

import json
import math
import os
import struct
import sys

import numpy as np
import torch

# dtype name -> (torch dtype, bytes per element, numpy dtype used for the raw bytes).
DTYPES = {
    "F64": (torch.float64, 8, "<f8"),
    "F32": (torch.float32, 4, "<f4"),
    "F16": (torch.float16, 2, "<f2"),
    "BF16": (torch.bfloat16, 2, "<u2"),  # numpy has no bf16: its bits travel as u16
    "I64": (torch.int64, 8, "<i8"),
    "I32": (torch.int32, 4, "<i4"),
    "I16": (torch.int16, 2, "<i2"),
    "I8": (torch.int8, 1, "i1"),
    "U8": (torch.uint8, 1, "u1"),
    "BOOL": (torch.bool, 1, "u1"),
}
TORCH_TO_NAME = {v[0]: k for k, v in DTYPES.items()}
INDEX_NAME = "model.safetensors.index.json"


def tensor_bytes(t):
    """The tensor's little-endian row-major bytes."""
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        arr = t.view(torch.int16).numpy().view("<u2")
    elif t.dtype == torch.bool:
        arr = t.numpy().astype("u1")
    else:
        arr = t.numpy().astype(DTYPES[TORCH_TO_NAME[t.dtype]][2])
    return arr.tobytes()


def tensor_from_bytes(dtype, shape, raw):
    torch_dtype, width, np_dtype = DTYPES[dtype]
    assert len(raw) == width * math.prod(shape), (dtype, shape, len(raw))
    arr = np.frombuffer(raw, dtype=np_dtype).copy().reshape(shape)
    if dtype == "BF16":
        return torch.from_numpy(arr.view("<i2")).view(torch.bfloat16)
    if dtype == "BOOL":
        return torch.from_numpy(arr).to(torch.bool)
    return torch.from_numpy(arr)


def header_bytes(header_obj):
    """The 8-byte length + JSON padded with spaces to a multiple of 8, as the Rust writer pads it."""
    text = json.dumps(header_obj, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    return struct.pack("<Q", len(text)) + text


def write_safetensors(path, tensors, metadata=None):
    """tensors: list of (name, torch.Tensor); data laid out in that order."""
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = dict(metadata)
    for name, t in tensors:
        raw = tensor_bytes(t)
        header[name] = {"dtype": TORCH_TO_NAME[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    with open(path, "wb") as f:
        f.write(header_bytes(header))
        for raw in blobs:
            f.write(raw)


def write_sharded(directory, tensors, shards, metadata=None):
    """Splits `tensors` into `shards` consecutive groups, HF names, plus the index."""
    os.makedirs(directory, exist_ok=True)
    per = math.ceil(len(tensors) / shards)
    weight_map, total = {}, 0
    for s in range(shards):
        name = "model-%05d-of-%05d.safetensors" % (s + 1, shards)
        group = tensors[s * per:(s + 1) * per]
        write_safetensors(os.path.join(directory, name), group, metadata)
        for tname, t in group:
            weight_map[tname] = name
            total += len(tensor_bytes(t))
    with open(os.path.join(directory, INDEX_NAME), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, f, indent=2)


class FormatError(Exception):
    pass


def _no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise FormatError("duplicate key in %s" % keys)
    return dict(pairs)


def read_safetensors(path):
    """Reads and validates by hand; returns ({name: (dtype, shape, begin, end)}, metadata, data bytes)."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise FormatError("%s: shorter than 8 bytes" % path)
    (n,) = struct.unpack("<Q", blob[:8])
    if n > 100_000_000 or 8 + n > len(blob):
        raise FormatError("%s: bad header length %d" % (path, n))
    if (8 + n) % 8 != 0:
        raise FormatError("%s: 8 + N = %d is not a multiple of 8" % (path, 8 + n))
    text = blob[8:8 + n]
    if not text.startswith(b"{") or text.rstrip(b" ") != text.rstrip():
        raise FormatError("%s: header must start with '{' and be padded with spaces only" % path)
    header = json.loads(text.decode("utf-8"), object_pairs_hook=_no_duplicates)
    metadata = header.pop("__metadata__", {})
    data = blob[8 + n:]
    entries, spans = {}, []
    for name, e in header.items():
        dtype, shape, (begin, end) = e["dtype"], e["shape"], e["data_offsets"]
        if end - begin != DTYPES[dtype][1] * math.prod(shape):
            raise FormatError("%s: %s: size mismatch" % (path, name))
        entries[name] = (dtype, shape, begin, end)
        spans.append((begin, end, name))
    pos = 0
    for begin, end, name in sorted(spans):
        if begin != pos:
            raise FormatError("%s: %s starts at %d, expected %d" % (path, name, begin, pos))
        pos = end
    if pos != len(data):
        raise FormatError("%s: data is %d bytes, tensors end at %d" % (path, len(data), pos))
    return entries, metadata, data


def read_tensor(entries, data, name):
    dtype, shape, begin, end = entries[name]
    return tensor_from_bytes(dtype, shape, data[begin:end])


# ---------------------------------------------------------------------------------------------------------------
# Fixtures

def formula_tensor(dtype, shape, k):
    """Deterministic values, exact in every dtype: floats are multiples of 1/8 in [-6.25, 6.25]
    (i*37 + 11k mod 101 - 50) / 8; integers (i*7919 + 13k) wrapped into the type's range, with the type's min and
    max as the first two elements; bools alternate by (i*3 + k) % 2."""
    n = math.prod(shape)
    i = torch.arange(n, dtype=torch.int64)
    torch_dtype = DTYPES[dtype][0]
    if dtype in ("F64", "F32", "F16", "BF16"):
        v = ((i * 37 + 11 * k) % 101 - 50).to(torch.float64) / 8
    elif dtype == "BOOL":
        v = (i * 3 + k) % 2 == 1
    else:
        info = torch.iinfo(torch_dtype)
        span = info.max - info.min + 1 if dtype != "I64" else None
        v = i * 7919 + 13 * k
        if span is not None:
            v = v % span + info.min
        if n >= 2:
            v[0], v[1] = info.min, info.max
    return v.to(torch_dtype).reshape(shape)


def roundtrip_tensors():
    tensors = []
    shapes = [[3, 5], [7], [2, 3, 4]]
    for k, dtype in enumerate(DTYPES):
        tensors.append(("%s.odd" % dtype.lower(), formula_tensor(dtype, shapes[k % 3], k)))
    tensors.append(("scalar.f32", formula_tensor("F32", [], 3)))
    tensors.append(("scalar.i64", torch.tensor(-(2 ** 62) - 5, dtype=torch.int64)))
    tensors.append(("empty.f32", torch.zeros(0, 4, dtype=torch.float32)))
    tensors.append(("empty.bf16", torch.zeros(3, 0, dtype=torch.bfloat16)))
    tensors.append(("model.layers.0.weight", formula_tensor("BF16", [5, 1, 3], 9)))
    # Bit patterns JSON cannot carry: compared only through the raw .bin.
    specials = torch.tensor([float("inf"), float("-inf"), float("nan"), -0.0, 1e-45, 3.4e38], dtype=torch.float32)
    tensors.append(("specials.f32", specials))
    tensors.append(("specials.bf16", specials.to(torch.bfloat16)))
    return tensors


METADATA = {"format": "pt", "note": "written by safetensors_writer.py", "unicode": "\u00e9\u4e2d"}


def write_expected(directory, tensors, metadata):
    """The second, independent form: raw bytes per tensor and float64 values in JSON."""
    os.makedirs(directory, exist_ok=True)
    manifest = {"metadata": metadata, "tensors": []}
    for idx, (name, t) in enumerate(tensors):
        raw = tensor_bytes(t)
        bin_name = "%03d.bin" % idx
        with open(os.path.join(directory, bin_name), "wb") as f:
            f.write(raw)
        values = t.to(torch.float64).flatten().tolist()
        finite = all(math.isfinite(v) for v in values) and not any(
            v == 0 and math.copysign(1, v) < 0 for v in values)
        manifest["tensors"].append({"name": name, "dtype": TORCH_TO_NAME[t.dtype], "shape": list(t.shape),
                                    "bin": bin_name, "values": values if finite else None})
    with open(os.path.join(directory, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)


def cmd_roundtrip(out):
    os.makedirs(out, exist_ok=True)
    tensors = roundtrip_tensors()
    write_safetensors(os.path.join(out, "roundtrip.safetensors"), tensors, METADATA)
    write_expected(os.path.join(out, "expected"), tensors, METADATA)
    # Valid safetensors whose dtypes the C++ reader accepts but does not turn into tensors.
    raw_file(os.path.join(out, "unreadable.safetensors"),
             {"u16": {"dtype": "U16", "shape": [2], "data_offsets": [0, 4]},
              "f8": {"dtype": "F8_E4M3", "shape": [3], "data_offsets": [4, 7]},
              "f4": {"dtype": "F4", "shape": [2], "data_offsets": [7, 8]},
              "c64": {"dtype": "C64", "shape": [1], "data_offsets": [8, 16]}}, bytes(range(16)))


def sharded_tensors():
    g = torch.Generator().manual_seed(7)
    tensors = []
    for layer in range(3):
        tensors.append(("model.layers.%d.attn.weight" % layer, torch.randn(6, 4, generator=g)))
        tensors.append(("model.layers.%d.norm.weight" % layer, torch.randn(4, generator=g).to(torch.bfloat16)))
    tensors.append(("model.embed.weight", torch.randn(10, 4, generator=g, dtype=torch.float64)))
    tensors.append(("model.step", torch.tensor(12345, dtype=torch.int64)))
    return tensors


def cmd_sharded(out):
    tensors = sharded_tensors()
    metadata = {"format": "pt"}
    write_sharded(os.path.join(out, "checkpoint"), tensors, 2, metadata)
    write_expected(os.path.join(out, "expected"), tensors, metadata)


def raw_file(path, header, data=b"", n=None, pad=True):
    """A file from a header given as text or object, with an optional forced length N."""
    text = header if isinstance(header, bytes) else json.dumps(header).encode("utf-8")
    if pad:
        text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text) if n is None else n) + text + data)


def cmd_malformed(out):
    os.makedirs(out, exist_ok=True)
    cases = []

    def case(name, expected, kind="file"):
        cases.append({"file": name, "expected": expected, "kind": kind})
        return os.path.join(out, name)

    f32 = lambda shape, b, e: {"dtype": "F32", "shape": shape, "data_offsets": [b, e]}
    good = os.path.join(out, "good.safetensors")
    write_safetensors(good, [("a", torch.arange(4, dtype=torch.float32)), ("b", torch.ones(2, 3))])
    blob = open(good, "rb").read()
    os.remove(good)

    with open(case("short.safetensors", "shorter than the 8-byte header"), "wb") as f:
        f.write(b"\x10\x00\x00")
    (n,) = struct.unpack("<Q", blob[:8])
    with open(case("truncated_data.safetensors", "should be at least %d + 40 = %d bytes" % (8 + n, 8 + n + 40)),
              "wb") as f:
        f.write(blob[:-5])
    with open(case("truncated_header.safetensors", "needs at least 8 + %d = %d bytes" % (n, 8 + n)), "wb") as f:
        f.write(blob[:8 + n // 2])
    raw_file(case("header_too_large.safetensors", "exceeds the format's limit of 100000000"), {}, n=100_000_001)
    raw_file(case("header_past_eof.safetensors", "needs at least 8 + 4096"), {"a": f32([1], 0, 4)}, b"\0" * 4,
             n=4096)
    raw_file(case("not_json.safetensors", "is not valid UTF-8 JSON"), b"{this is not json}")
    raw_file(case("bad_utf8.safetensors", "ill-formed UTF-8"),
             b'{"a\xff\xfe": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]}}', b"\0" * 4)
    raw_file(case("json_array.safetensors", "starting with '{'"), b"[1, 2, 3]")
    raw_file(case("leading_space.safetensors", "starting with '{' (found byte 0x20)"),
             b' {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}', b"\0" * 4)
    raw_file(case("trailing_garbage.safetensors", "is not valid UTF-8 JSON"), b"{}x")
    raw_file(case("entry_not_object.safetensors", "tensor \"a\": the header entry must be an object"), {"a": 5})
    raw_file(case("missing_dtype.safetensors", "tensor \"a\": missing \"dtype\""),
             {"a": {"shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4)
    raw_file(case("dtype_not_string.safetensors", "\"dtype\" must be a string"),
             {"a": {"dtype": 32, "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4)
    raw_file(case("unknown_dtype.safetensors", "unknown dtype \"F31\""),
             {"a": {"dtype": "F31", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4)
    raw_file(case("missing_shape.safetensors", "tensor \"a\": missing \"shape\""),
             {"a": {"dtype": "F32", "data_offsets": [0, 4]}}, b"\0" * 4)
    raw_file(case("shape_not_array.safetensors", "\"shape\" must be an array of integers"),
             {"a": {"dtype": "F32", "shape": 1, "data_offsets": [0, 4]}}, b"\0" * 4)
    raw_file(case("shape_float.safetensors", "but element 1 is 2.5"),
             {"a": {"dtype": "F32", "shape": [1, 2.5], "data_offsets": [0, 4]}}, b"\0" * 4)
    raw_file(case("negative_dim.safetensors", "negative dimension -2"), {"a": f32([3, -2], 0, 4)}, b"\0" * 4)
    raw_file(case("missing_offsets.safetensors", "missing \"data_offsets\""),
             {"a": {"dtype": "F32", "shape": [1]}}, b"\0" * 4)
    raw_file(case("offsets_one_number.safetensors", "\"data_offsets\" must be [begin, end]"),
             {"a": {"dtype": "F32", "shape": [1], "data_offsets": [4]}}, b"\0" * 4)
    raw_file(case("offsets_negative.safetensors", "\"data_offsets\" must be [begin, end]"),
             {"a": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]}}, b"\0" * 4)
    raw_file(case("begin_after_end.safetensors", "data_offsets [8, 4] have begin > end"),
             {"a": f32([1], 8, 4)}, b"\0" * 8)
    raw_file(case("wrong_size.safetensors", "hold 8 bytes, but shape [3] of F32 needs 12 bytes"),
             {"a": f32([3], 0, 8)}, b"\0" * 8)
    raw_file(case("numel_overflow.safetensors", "overflows 64 bits"),
             {"a": f32([2 ** 32, 2 ** 32, 16], 0, 0)})
    raw_file(case("sub_byte_misaligned.safetensors", "do not end on a byte boundary"),
             {"a": {"dtype": "F4", "shape": [3], "data_offsets": [0, 1]}}, b"\0")
    raw_file(case("offsets_out_of_range.safetensors", "run past the end of the data buffer (8 bytes)"),
             {"a": f32([2], 0, 8), "b": f32([100], 8, 408)}, b"\0" * 8)
    raw_file(case("first_not_at_zero.safetensors", "starts at byte 4 of the data buffer, not 0"),
             {"a": f32([1], 4, 8)}, b"\0" * 8)
    raw_file(case("hole.safetensors", "a hole of 4 bytes in the data buffer between tensor \"a\""),
             {"a": f32([1], 0, 4), "b": f32([1], 8, 12)}, b"\0" * 12)
    raw_file(case("overlap.safetensors", "overlap in the data buffer"),
             {"a": f32([2], 0, 8), "b": f32([2], 4, 12)}, b"\0" * 12)
    raw_file(case("trailing_bytes.safetensors", "3 bytes after the last tensor's data"),
             {"a": f32([1], 0, 4)}, b"\0" * 7)
    raw_file(case("duplicate_name.safetensors", "duplicate key \"a\""),
             b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, '
             b'"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}', b"\0" * 8)
    raw_file(case("duplicate_field.safetensors", "duplicate key \"dtype\""),
             b'{"a": {"dtype": "F32", "dtype": "I32", "shape": [1], "data_offsets": [0, 4]}}', b"\0" * 4)
    raw_file(case("metadata_not_strings.safetensors", "\"__metadata__\" must map strings to strings, but \"n\""),
             {"__metadata__": {"ok": "yes", "n": 1}})
    raw_file(case("metadata_not_object.safetensors", "\"__metadata__\" must be an object of strings"),
             {"__metadata__": ["format", "pt"]})

    # Checkpoints (directories with an index).
    def checkpoint(name, expected, weight_map, shard_contents, index_text=None):
        d = case(name, expected, kind="checkpoint")
        os.makedirs(d, exist_ok=True)
        for shard, tensors in shard_contents.items():
            write_safetensors(os.path.join(d, shard), tensors)
        with open(os.path.join(d, INDEX_NAME), "w") as f:
            f.write(index_text if index_text is not None else
                    json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))

    x = [("x", torch.ones(2))]
    y = [("y", torch.zeros(3))]
    s1, s2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
    checkpoint("ckpt_missing_shard", s2, {"x": s1, "y": s2}, {s1: x})
    checkpoint("ckpt_listed_not_present", "weight_map puts tensor \"z\" in " + s2,
               {"x": s1, "y": s2, "z": s2}, {s1: x, s2: y})
    checkpoint("ckpt_present_not_listed", "tensor \"y\" is not listed in the weight_map",
               {"x": s1}, {s1: x + y})
    checkpoint("ckpt_in_two_shards", "tensor \"x\" is in two shards", {"x": s1, "y": s2}, {s1: x, s2: x + y})
    checkpoint("ckpt_wrong_shard", "puts it in " + s2, {"x": s2, "y": s1}, {s1: x, s2: y})
    checkpoint("ckpt_index_not_json", "the index is not valid UTF-8 JSON", {}, {}, index_text="{weight_map")
    checkpoint("ckpt_no_weight_map", "with \"weight_map\"", {}, {}, index_text='{"metadata": {}}')
    checkpoint("ckpt_bad_shard_file", "lists shard " + s1 + ": ", {"x": s1}, {}, index_text=None)
    with open(os.path.join(out, "ckpt_bad_shard_file", s1), "wb") as f:
        f.write(b"\x01\x02")
    checkpoint("ckpt_shard_path_escape", "is not a file name in the index's folder", {"x": "../x.safetensors"}, {})
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump(cases, f, indent=1)


# ---------------------------------------------------------------------------------------------------------------
# Verification of files the C++ writer produced

def check(cond, message):
    if not cond:
        raise FormatError(message)


def compare(where, entries, data, manifest_tensors, expected_dir):
    for t in manifest_tensors:
        name = t["name"]
        check(name in entries, "%s: tensor %s missing" % (where, name))
        dtype, shape, begin, end = entries[name]
        check(dtype == t["dtype"], "%s: %s: dtype %s != %s" % (where, name, dtype, t["dtype"]))
        check(shape == t["shape"], "%s: %s: shape %s != %s" % (where, name, shape, t["shape"]))
        with open(os.path.join(expected_dir, t["bin"]), "rb") as f:
            want = f.read()
        check(data[begin:end] == want, "%s: %s: bytes differ" % (where, name))
        if t["values"] is not None:
            got = tensor_from_bytes(dtype, shape, data[begin:end]).to(torch.float64).flatten().tolist()
            check(got == t["values"], "%s: %s: values differ" % (where, name))


def load_manifest(expected_dir):
    with open(os.path.join(expected_dir, "manifest.json")) as f:
        return json.load(f)


def cmd_verify(path, expected_dir):
    manifest = load_manifest(expected_dir)
    entries, metadata, data = read_safetensors(path)
    check(metadata == manifest["metadata"], "%s: metadata %s != %s" % (path, metadata, manifest["metadata"]))
    check(len(entries) == len(manifest["tensors"]), "%s: %d tensors, expected %d" % (
        path, len(entries), len(manifest["tensors"])))
    compare(path, entries, data, manifest["tensors"], expected_dir)
    # The C++ writer lays the data out in the given (manifest) order.
    order = sorted(entries, key=lambda n: entries[n][2:])
    nonempty = [n for n in order if entries[n][3] > entries[n][2]]
    want = [t["name"] for t in manifest["tensors"] if t["name"] in nonempty]
    check(nonempty == want, "%s: data order %s != given order %s" % (path, nonempty, want))


def cmd_verify_checkpoint(directory, expected_dir, max_shard_bytes=None, min_shards=1):
    manifest = load_manifest(expected_dir)
    index_path = os.path.join(directory, INDEX_NAME)
    if os.path.exists(index_path):
        with open(index_path) as f:
            index = json.load(f, object_pairs_hook=_no_duplicates)
        weight_map = index["weight_map"]
        shards = sorted(set(weight_map.values()))
        total = 0
        seen = {}
        for shard in shards:
            path = os.path.join(directory, shard)
            entries, metadata, data = read_safetensors(path)
            check(metadata == manifest["metadata"], "%s: metadata %s" % (path, metadata))
            if max_shard_bytes is not None:
                check(len(data) <= max_shard_bytes or len(entries) == 1,
                      "%s: %d data bytes > %d" % (path, len(data), max_shard_bytes))
            for name in entries:
                check(weight_map.get(name) == shard, "%s: %s not mapped to this shard" % (path, name))
                check(name not in seen, "%s in two shards" % name)
                seen[name] = shard
            total += len(data)
            compare(path, entries, data, [t for t in manifest["tensors"] if t["name"] in entries], expected_dir)
        check(set(seen) == set(weight_map), "weight_map and shards disagree")
        check(index["metadata"]["total_size"] == total, "total_size %s != %d" % (index["metadata"], total))
    else:
        shards = ["model.safetensors"]
        entries, metadata, data = read_safetensors(os.path.join(directory, "model.safetensors"))
        check(metadata == manifest["metadata"], "metadata %s" % metadata)
        seen = entries
        compare(directory, entries, data, manifest["tensors"], expected_dir)
    check(sorted(seen) == sorted(t["name"] for t in manifest["tensors"]), "tensor set differs: %s" % sorted(seen))
    check(len(shards) >= min_shards, "%d shards, expected at least %d" % (len(shards), min_shards))


def main(argv):
    if len(argv) < 3:
        print(__doc__)
        return 2
    cmd, out = argv[1], argv[2]
    try:
        if cmd == "fixtures":
            cmd_roundtrip(os.path.join(out, "roundtrip"))
            cmd_sharded(os.path.join(out, "sharded"))
            cmd_malformed(os.path.join(out, "malformed"))
        elif cmd == "roundtrip":
            cmd_roundtrip(out)
        elif cmd == "sharded":
            cmd_sharded(out)
        elif cmd == "malformed":
            cmd_malformed(out)
        elif cmd == "verify":
            cmd_verify(out, argv[3])
        elif cmd == "verify-checkpoint":
            opts = {"--max-shard-bytes": None, "--min-shards": "1"}
            rest = argv[4:]
            while rest:
                opts[rest[0]] = rest[1]
                rest = rest[2:]
            max_bytes = opts["--max-shard-bytes"]
            cmd_verify_checkpoint(out, argv[3], None if max_bytes is None else int(max_bytes),
                                  int(opts["--min-shards"]))
        else:
            print("unknown command %s\n%s" % (cmd, __doc__))
            return 2
    except (FormatError, KeyError, ValueError, json.JSONDecodeError) as e:
        print("%s %s: FAILED: %s" % (cmd, out, e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
