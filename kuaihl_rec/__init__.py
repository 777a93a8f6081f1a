"""kuaihl_rec: frame-level live-streaming content scoring on TorchRec."""
__version__ = "0.1.0"
