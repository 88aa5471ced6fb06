import os

import pytest
import torch

# Two torch jobs on two cores slow each other ~25x; one process, a fixed thread count.
torch.set_num_threads(int(os.environ.get("ERASE_TEST_THREADS", "2")))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network


def pytest_configure(config):
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    dlog.disable_progress_bar()
    tlog.disable_progress_bar()


@pytest.fixture(scope="session")
def toy_pipe():
    from erase.models import load_pipeline

    return load_pipeline("toy", device="cpu")


@pytest.fixture(scope="session")
def toy_judge():
    from erase.judges import load_judge

    return load_judge("toy", device="cpu")


@pytest.fixture(scope="session")
def toy_book():
    from erase.concepts import load_concepts

    return load_concepts("toy")


@pytest.fixture(scope="session")
def uce_red_run(tmp_path_factory):
    """A run folder of UCE's erasure of red (the guided toy setting), unscored: seconds to make.
    Tests that add files to it copy it first."""
    from erase.cli import main

    run_dir = tmp_path_factory.mktemp("uce-red") / "uce"
    args = ["concept", "red", "--method", "uce", "--anchor", "a blue {shape}", "--no-score"]
    assert main([*args, "--out", str(run_dir)]) == 0
    return run_dir
