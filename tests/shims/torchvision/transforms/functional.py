from torchvision import _unavailable

resize = _unavailable
