"""camserve client SDK: predictions with their explanation maps from a camserve server, over gRPC."""

__all__: list[str] = []
