import functools
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Make `tests.support` importable however pytest is invoked.
sys.path.insert(0, str(ROOT))

from tests.support.mlflowserver import running_mlflow_server  # noqa: E402


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow tracking server, shared by the session's tests; yields its URL."""
    with running_mlflow_server(tmp_path_factory.mktemp("mlflow")) as url:
        yield url


#: Where the tests that start Ray or train with TensorFlow live: modules that mark tests ``slow``. Under `make
#: test`'s `pytest -n 2` these modules run one after another on one worker (two Ray clusters at once would fight
#: for two cores), while the other worker takes the operator, unit and packaging tests, which mostly wait.
SLOW_MARK = "pytest.mark.slow"
#: Also on that worker, never beside a Ray test: the chaos suite's convergence bounds assume its emulated API
#: server gets a core (beside a Ray cluster's start both seeds missed them).
SERIAL_FOLDERS = ("tests/chaos/",)


@functools.cache
def _in_the_serial_scope(module: str) -> bool:
    """A slow module (Ray, TensorFlow) or one in :data:`SERIAL_FOLDERS`."""
    path = ROOT / module
    if module.startswith(SERIAL_FOLDERS):
        return True
    return path.suffix == ".py" and path.is_file() and SLOW_MARK in path.read_text()


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """xdist's scope scheduling, with every slow module in one scope. (xdist's own ``loadgroup`` would do this by
    mark, but its node-id suffix has no effect on pytest 9's node ids.)"""
    from xdist.scheduler import LoadScopeScheduling

    class SlowModulesTogether(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return "slow" if _in_the_serial_scope(nodeid.split("::", 1)[0]) else nodeid

    return SlowModulesTogether(config, log)
