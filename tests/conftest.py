"""Shared fixtures: deterministic seeds and small thread counts keep the suite fast and repeatable."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
