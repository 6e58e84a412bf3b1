#!/usr/bin/env bash
# Regenerates the Python modules of src/deepfleet/deploy/serve/_proto/ from
# grpc_predict_v2.proto with grpcio-tools (the dev extra). Run from anywhere: `make proto`.
#
# The message classes are built in a private descriptor pool, not protobuf's default one:
# tritonclient registers the same `inference.*` names in the default pool, and a process
# that imports both (a test, a benchmark, a user's client) would otherwise fail to import.
set -euo pipefail
cd "$(dirname "$0")/../src"
PYTHON="${PYTHON:-python}"
out=deepfleet/deploy/serve/_proto
"$PYTHON" -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. \
  "$out/grpc_predict_v2.proto"
sed -i 's/_descriptor_pool\.Default()\.AddSerializedFile/_descriptor_pool.DescriptorPool().AddSerializedFile/' \
  "$out/grpc_predict_v2_pb2.py"
grep -q 'DescriptorPool().AddSerializedFile' "$out/grpc_predict_v2_pb2.py"
