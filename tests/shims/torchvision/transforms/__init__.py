"""Names pytorch_grad_cam.utils.image imports; its preprocessing is never used by the tests."""

from torchvision import _unavailable


class Compose:
    __init__ = _unavailable


class Normalize:
    __init__ = _unavailable


class ToTensor:
    __init__ = _unavailable
