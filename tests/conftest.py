"""Suite-wide test settings."""

import torch


def pytest_configure(config):
    # The suite runs on 2 pytest-xdist workers on 2-core machines: one torch thread per worker avoids
    # oversubscribing the cores (OpenMP threads spinning against each other make tests many times slower).
    # Tests about threading set the number of threads themselves.
    torch.set_num_threads(1)
