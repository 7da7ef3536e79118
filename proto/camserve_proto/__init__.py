"""Generated protobuf and gRPC modules of camserve's contract (proto/*.proto): run proto/generate.py.

``camserve_proto.camserve.v1.explain_pb2``: camserve's ExplainRequest / ExplainResponse.
``camserve_proto.org.pytorch.serve.grpc.inference`` / ``.management``: TorchServe 0.12's gRPC services.
"""
