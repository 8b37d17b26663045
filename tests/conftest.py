import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may reach a hub
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from workbench import random_models  # noqa: E402


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """`tiny_dir(family)` -> path of a tiny random model of that family (any architecture), built once per
    session."""
    root = tmp_path_factory.mktemp("tiny-models")
    built = {}

    def get(family: str):
        if family not in built:
            built[family] = random_models.build(family, root)
        return built[family]

    return get


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "runs.duckdb"


@pytest.fixture(scope="session")
def demo():
    """The bundled demo model, loaded once for every test that measures it (skips where it is not on disk)."""
    import workbench as wb
    from workbench.models import bundled_models

    if "demo" not in bundled_models():
        pytest.skip("the demo model is not on disk")
    return wb.load_model("demo")
