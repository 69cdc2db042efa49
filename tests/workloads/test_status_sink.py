"""The workload's Kubernetes progress sink patches its own TrainingJob's status (against kmock, no Ray)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import kmock
import pytest

from tests.support.documents import example
from tests.support.kubesim import TRAININGJOBS, Emulator, register
from trainserve.api.progress import ProgressEvent
from trainserve.api.trainingjob import CheckpointStatus, ModelStatus
from trainserve_workloads.progress import KubernetesStatusSink

T = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.asyncio
async def test_progress_checkpoint_and_model_reach_status_throttled() -> None:
    async with Emulator() as api, kmock.Server(api):
        register(api, kuberay=False)
        api.objects[TRAININGJOBS, "ml", "digits"] = {**example("digits-trainingjob"), "status": {"phase": "Running"}}
        now = [0.0]
        sink = KubernetesStatusSink(
            "digits", "ml", api_url=str(api.url), token="t0ken", min_interval=1.0, clock=lambda: now[0]
        )

        def run() -> None:
            sink.emit(ProgressEvent(type="started", time=T, total_epochs=3))
            for epoch in (1, 2):
                sink.emit(
                    ProgressEvent(
                        type="epoch",
                        time=T,
                        total_epochs=3,
                        epoch=epoch,
                        metrics={"loss": 1.0 / epoch},
                        checkpoint=CheckpointStatus(uri=f"/c/epoch-{epoch}", epoch=epoch),
                    )
                )
            now[0] = 5.0
            sink.emit(ProgressEvent(type="completed", time=T, total_epochs=3, model=ModelStatus(uri="/m/1", version=1)))
            sink.close()

        before = len(api._requests)
        await asyncio.to_thread(run)  # the sink blocks (urllib), as it does in the driver
        patches = [r for r in list(api._requests)[before:] if r.method.value == "PATCH"]
        assert len(patches) == 2  # started (at once), epoch 1 and 2 throttled away, completed (at once)
        assert all(str(r.url).endswith("/trainingjobs/digits/status") for r in patches)
        assert patches[0].headers["Authorization"] == "Bearer t0ken"
        status = api.objects[TRAININGJOBS, "ml", "digits"].raw["status"]
        assert status["phase"] == "Running"  # the operator's fields are not touched
        assert status["progress"]["epoch"] == 2 and status["progress"]["percent"] == 100.0
        assert status["lastCheckpoint"]["uri"] == "/c/epoch-2" and status["model"] == {
            "uri": "/m/1",
            "version": 1,
            "metrics": {},
        }
        assert sink.failures == 0


def test_an_unreachable_api_never_stops_training() -> None:
    sink = KubernetesStatusSink("digits", "ml", api_url="http://127.0.0.1:9", token="", timeout=0.5)
    sink.emit(ProgressEvent(type="started", time=T, total_epochs=3))
    assert sink.failures == 1
