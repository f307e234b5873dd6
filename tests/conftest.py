import pytest
import torch

# Tiny models gain nothing from threads, and on a busy 2-core machine OpenMP spinning makes them
# hundreds of times slower; tests that time nothing run single-threaded.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
