"""TorchServe handlers for camserve: request decoding and validation, the engine call, response encoding."""

__all__: list[str] = []
