"""camserve server side: the explanation engine (pure PyTorch) and the TorchServe handlers around it."""
