"""The paper's networks, and a small one for CPU demos. Each is an nn.Sequential, so `propagate` can walk it.

The paper gives layer counts but no channel counts or kernel sizes; the choices here:

LeNet5 (MNIST, 1x28x28): 3 conv layers (3x3) each followed by ReLU and 2x2 max-pool, then two fully
    connected layers of 200 and the 10-way output. Channels 16/32/64 double per stage, as is usual;
    conv2 has no padding so the maps halve exactly (28 -> 14 -> 12 -> 6 -> 6 -> 3) and no pool drops a
    row. About 1.9 M multiply-adds per image: trainable to ~99% on MNIST in seconds on a GPU.
CifarCNN (CIFAR-10, 3x32x32): 5 conv layers (3x3, 'same') each followed by ReLU and 2x2 max-pool
    (32 -> 16 -> 8 -> 4 -> 2 -> 1), channels 32/64/128/256/256, then fully connected 256 -> 256 -> 128 -> 10.
DemoCNN (MNIST-sized, for a laptop CPU or Binder): 2 conv layers (5x5) with 8 and 16 channels, each
    with ReLU and max-pool, then 400 -> 64 -> 10. About 0.5 M multiply-adds per image, so an epoch over
    the embedded 10,000 digits takes seconds on two cores, yet every layer type of the lab is there.

Inputs are images in [0, 1]. `model(x)` is the expectation model (no noise).
"""

from __future__ import annotations

from torch import Tensor, nn

from ._checks import check_input


class ImageClassifier(nn.Sequential):
    """An nn.Sequential that knows its input shape and checks it, so a wrong image gets a clear error."""

    input_shape: tuple[int, int, int]
    classes: int = 10

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, classes) logits / output means
        if not isinstance(x, Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != self.input_shape:
            check_input(self, x)  # raises a ValueError that names the expected shape
        return super().forward(x)


def _conv_block(in_channels: int, out_channels: int, kernel_size: int, padding: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding), nn.ReLU(), nn.MaxPool2d(2)]


class LeNet5(ImageClassifier):
    input_shape = (1, 28, 28)

    def __init__(self, classes: int = 10) -> None:
        super().__init__(
            *_conv_block(1, 16, 3, padding=1),   # (B, 16, 14, 14)
            *_conv_block(16, 32, 3, padding=0),  # (B, 32, 6, 6)
            *_conv_block(32, 64, 3, padding=1),  # (B, 64, 3, 3)
            nn.Flatten(),                        # (B, 576)
            nn.Linear(64 * 3 * 3, 200), nn.ReLU(),
            nn.Linear(200, 200), nn.ReLU(),
            nn.Linear(200, classes),             # (B, classes)
        )
        self.classes = classes


class CifarCNN(ImageClassifier):
    input_shape = (3, 32, 32)

    def __init__(self, classes: int = 10) -> None:
        channels = [3, 32, 64, 128, 256, 256]
        blocks = [layer for c_in, c_out in zip(channels, channels[1:]) for layer in _conv_block(c_in, c_out, 3, 1)]
        super().__init__(
            *blocks,                             # (B, 256, 1, 1)
            nn.Flatten(),                        # (B, 256)
            nn.Linear(256, 256), nn.ReLU(),
            nn.Linear(256, 128), nn.ReLU(),
            nn.Linear(128, classes),
        )
        self.classes = classes


class DemoCNN(ImageClassifier):
    input_shape = (1, 28, 28)

    def __init__(self, classes: int = 10) -> None:
        super().__init__(
            *_conv_block(1, 8, 5, padding=2),    # (B, 8, 14, 14)
            *_conv_block(8, 16, 5, padding=0),   # (B, 16, 5, 5)
            nn.Flatten(),                        # (B, 400)
            nn.Linear(16 * 5 * 5, 64), nn.ReLU(),
            nn.Linear(64, classes),
        )
        self.classes = classes


MODELS = {"lenet5": LeNet5, "cifar-cnn": CifarCNN, "demo-cnn": DemoCNN}


def build(name: str, classes: int = 10) -> ImageClassifier:
    """A model by its registry name (see MODELS)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name](classes)
