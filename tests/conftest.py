import os

import pytest

from cifar_fixtures import make_images, write_binary


@pytest.fixture(scope="session")
def cifar_dir(tmp_path_factory):
    """A full-size synthetic CIFAR-10 (50,000 + 10,000 images) in the binary layout.

    Full size so that the command-line scripts' check of the official counts passes;
    the binary layout is the quickest to write and read (about a second).
    """
    folder = tmp_path_factory.mktemp("cifar") / "cifar-10-batches-bin"
    write_binary(str(folder), make_images(50_000, seed=1), make_images(10_000, seed=2))
    return str(folder)
