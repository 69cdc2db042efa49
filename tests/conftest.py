import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Make `tests.support` importable however pytest is invoked.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.mlflowserver import running_mlflow_server


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow tracking server, shared by the session's tests; yields its URL."""
    with running_mlflow_server(tmp_path_factory.mktemp("mlflow")) as url:
        yield url


#: Tests that start Ray or train with TensorFlow (marked ``slow``): under `make test`'s `pytest -n 2 --dist
#: loadgroup` they run one after another on one worker (two Ray clusters at once would fight for two cores), while
#: the other worker takes the operator, chaos, unit and packaging tests, which mostly wait on their emulated API.
RAY_GROUP = "ray"


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which turns the group mark into the node id's suffix
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.xdist_group(RAY_GROUP))
