"""The baseline a user would write: FastAPI + uvicorn, one model call per request, same model and URL.

python -m benchmarks.baseline_server MODEL_DIR NAME PORT
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import tensorflow as tf
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


def build(model_dir: str, name: str) -> FastAPI:
    signature = tf.saved_model.load(model_dir).signatures["serving_default"]
    app = FastAPI()

    @app.post(f"/v1/models/{name}:predict")
    async def predict(request: Request) -> JSONResponse:
        rows = np.asarray((await request.json())["instances"], dtype=np.float32)
        predictions = signature(features=tf.constant(rows))["predictions"].numpy()
        return JSONResponse({"predictions": predictions.tolist()})

    @app.get("/v2/health/ready")
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    return app


if __name__ == "__main__":
    model_dir, name, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    uvicorn.run(build(model_dir, name), host="127.0.0.1", port=port, access_log=False, log_level="warning")
