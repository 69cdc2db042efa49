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
