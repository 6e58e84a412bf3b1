"""Open Inference Protocol v2 over gRPC: grpc_predict_v2.proto and the Python modules
grpcio-tools generates from it (scripts/gen_proto.sh, `make proto`; never edited by hand)."""
