"""Models that the reference backend cannot lower, that cannot be built, or whose build is interrupted."""

import os
import signal
import time
from pathlib import Path

import torch


class SortNet(torch.nn.Module):
    def forward(self, x):
        return torch.sort(x, dim=-1).values


class NeedsArgument(torch.nn.Module):
    def __init__(self, width):
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        self.width = width

    def forward(self, x):
        return x


class WaitsToBeStopped(torch.nn.Module):
    """Says it is being built (writes ``marker``), then waits: a test stops it with a signal."""

    def __init__(self, marker: str, seconds: float = 60.0):
        super().__init__()
        Path(marker).write_text("building")
        time.sleep(seconds)

    def forward(self, x):
        return x


class KillsItsProcess(torch.nn.Module):
    """Dies as the out-of-memory killer would make it die: SIGKILL, no chance to record anything."""

    def __init__(self):
        super().__init__()
        os.kill(os.getpid(), signal.SIGKILL)

    def forward(self, x):
        return x


def make_identity() -> torch.nn.Module:
    """A model factory: a plain function, which a received config may not name without --trust."""
    return torch.nn.Identity()
