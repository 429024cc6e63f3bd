import pytest

from detkit.data import shapes


@pytest.fixture(scope="session")
def shapes_set(tmp_path_factory):
    """A small generated Shapes set (both layouts), shared by the data tests."""
    return shapes.generate(tmp_path_factory.mktemp("shapes"), num_train=24, num_val=6, image_size=128, seed=1)


@pytest.fixture(scope="session")
def hard_set(tmp_path_factory):
    return shapes.generate(tmp_path_factory.mktemp("hard"), num_train=20, num_val=0, image_size=160, seed=2,
                           preset="hard")
