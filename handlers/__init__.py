"""camserve server side: the explanation engine (pure PyTorch), the TorchServe handlers around it, and the
preprocessing (:mod:`handlers.preprocess`) that the handlers and in-process callers share."""
