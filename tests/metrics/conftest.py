import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module of small Inception forwards: on a shared 2-core machine OpenMP's
    spin-waiting made the ADM modules 3x slower with 2 threads (58 s vs 18 s measured under load); restored
    afterwards. A module opts in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)
