import os
import sys
import warnings

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "user_backends"))  # a user's own backends and models
warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

from backend_for_tests import register  # noqa: E402
from pipeline import zoo  # noqa: E402

register()


@pytest.fixture
def basic():
    return zoo.BasicModule()


@pytest.fixture
def xh():
    generator = torch.Generator().manual_seed(0)
    return torch.randn(5, generator=generator), torch.randn(5, generator=generator)
