"""Import-only stand-in for torchvision (see tests/oracle_libs.py): the oracle libraries import
these names at module level; any use raises, so a test can never pass through the shim."""

SHIM = True


def _unavailable(*args, **kwargs):
    raise RuntimeError("torchvision is a test shim here: install a torchvision that loads "
                       "against this torch to use it")
