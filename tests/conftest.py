"""Shared fixtures: tiny data in real formats and an isolated results directory."""
from __future__ import annotations

import pytest

from tests.helpers import write_mnist_like


@pytest.fixture(autouse=True)
def away_from_the_project(tmp_path_factory, monkeypatch):
    """Every test runs from a scratch working directory: nothing may depend on the cwd."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


@pytest.fixture
def mnist_root(tmp_path):
    root = tmp_path / "data"
    write_mnist_like(root, "MNIST")
    write_mnist_like(root, "FashionMNIST", seed=1)
    return root


@pytest.fixture
def results(tmp_path):
    return tmp_path / "results"
