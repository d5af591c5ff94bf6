"""Data shipped inside noiselab: the embedded MNIST subset (see README.md here)."""
