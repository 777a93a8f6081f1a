"""ID-based CTR baselines on TorchRec."""
