"""Running camserve: the TorchServe configuration, the server controller (:mod:`deploy.serverctl`) and the demo."""
