#!/usr/bin/env bash
# `nats train` writes TensorBoard event files that an independent reader decodes: the TFRecord framing and its
# masked CRC-32C are checked by Python code written from the format's description (not ours), and the Event /
# Summary messages are decoded by python3-protobuf from a schema this script declares itself with TensorFlow's
# field numbers (event.proto: wall_time 1, step 2, file_version 3, summary 5; summary.proto: value 1, tag 1,
# simple_value 2), so a wrong field number or framing in runtime/event_file_writer.cpp fails here.
# usage: tensorboard_reader_test.sh NATS_BINARY SOURCE_DIR DATA_DIR
set -euo pipefail
nats=$1 src=$2 data=$3
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$nats" train --config "$src/configs/tiny_nats.textproto" --set train.steps=6 --set train.log_interval=2 \
  --set train.eval_interval=3 --set train.eval_windows=2 --set model.d_model=64 --set model.context_length=32 \
  --set data.train_path="$data/books/train.tok" --set data.val_path="$data/books/val.tok" \
  --set train.run_dir="$out/run" --set train.threads=1 \
  --set train.peak_gflops=10 > "$out/train.log"
# Debian's interpreter: python3-protobuf is installed for it (launch/install_deps.sh), not for other pythons.
/usr/bin/python3 - "$out/run/tb" <<'PY'
import glob, struct, sys
from google.protobuf import descriptor_pb2, descriptor_pool
try:
    from google.protobuf.message_factory import GetMessageClass
except ImportError:  # protobuf < 4
    from google.protobuf import message_factory
    GetMessageClass = lambda d: message_factory.MessageFactory().GetPrototype(d)

# CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), bit by bit, and TFRecord's mask.
def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF
def masked(data):
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF

F = descriptor_pb2.FieldDescriptorProto
proto = descriptor_pb2.FileDescriptorProto(name="tf_event_subset.proto", package="tfcheck", syntax="proto3")
summary = proto.message_type.add(name="Summary")
value = summary.nested_type.add(name="Value")
value.field.add(name="tag", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
value.field.add(name="simple_value", number=2, type=F.TYPE_FLOAT, label=F.LABEL_OPTIONAL)
summary.field.add(name="value", number=1, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED, type_name=".tfcheck.Summary.Value")
event = proto.message_type.add(name="Event")
event.field.add(name="wall_time", number=1, type=F.TYPE_DOUBLE, label=F.LABEL_OPTIONAL)
event.field.add(name="step", number=2, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL)
event.field.add(name="file_version", number=3, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
event.field.add(name="summary", number=5, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL, type_name=".tfcheck.Summary")
pool = descriptor_pool.DescriptorPool()
pool.Add(proto)
Event = GetMessageClass(pool.FindMessageTypeByName("tfcheck.Event"))

files = glob.glob(sys.argv[1] + "/events.out.tfevents.*")
assert len(files) == 1, files
raw = open(files[0], "rb").read()
events, pos = [], 0
while pos < len(raw):
    header = raw[pos:pos + 8]
    (length,) = struct.unpack("<Q", header)
    (length_crc,) = struct.unpack("<I", raw[pos + 8:pos + 12])
    assert length_crc == masked(header), f"record at byte {pos}: bad length CRC"
    body = raw[pos + 12:pos + 12 + length]
    (body_crc,) = struct.unpack("<I", raw[pos + 12 + length:pos + 16 + length])
    assert body_crc == masked(body), f"record at byte {pos}: bad data CRC"
    e = Event()
    e.ParseFromString(body)
    events.append(e)
    pos += 16 + length
assert events[0].file_version == "brain.Event:2", events[0]
scalars = {}
for e in events[1:]:
    assert e.wall_time > 1.6e9, e
    for v in e.summary.value:
        scalars.setdefault(v.tag, []).append((e.step, v.simple_value))
for tag in ("train/loss", "train/lr", "train/grad_norm", "train/tokens_per_s", "train/mfu", "eval/loss",
            "eval/bits_per_byte", "nats/kv_fraction", "nats_layer0/frac_global", "nats_layer1/kv_fraction"):
    assert tag in scalars, f"missing {tag}; have {sorted(scalars)}"
steps = [s for s, _ in scalars["train/loss"]]
assert steps == [1, 2, 4, 6], steps
assert [s for s, _ in scalars["eval/loss"]] == [0, 3, 6], scalars["eval/loss"]
assert all(0 <= v <= 1 for _, v in scalars["nats/kv_fraction"])
assert scalars["train/loss"][0][1] > 9, scalars["train/loss"]  # an untrained GPT-2-vocabulary model: ~ln(50304)
print(f"{len(events)} events, {sum(len(v) for v in scalars.values())} scalars in {len(scalars)} tags; framing and CRCs valid")
PY
