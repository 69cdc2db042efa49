"""TensorFlow's thread pools in a serving replica follow the replica's CPU share, not the node's core count.

Each case runs in its own Python process: the pools can be sized only before TensorFlow's context starts.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.workloads.conftest import cli_env

PROBE = """
import json, sys
import tensorflow as tf
from trainserve_workloads.tf_threads import size_thread_pools
first = size_thread_pools(float(sys.argv[1]))
tf.constant(1.0) + 1  # the context starts
late = size_thread_pools(8)
print(json.dumps({"set": first, "late": late, "intra": tf.config.threading.get_intra_op_parallelism_threads(),
                  "inter": tf.config.threading.get_inter_op_parallelism_threads()}))
"""


def probe(cpus: float, **env: str) -> dict[str, int | None]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(cpus)], capture_output=True, text=True, env=cli_env(env), check=True
    )
    result: dict[str, int | None] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_pools_are_sized_to_the_replica_share_rounded_up_and_only_before_tensorflow_starts() -> None:
    assert probe(2.5) == {"set": 3, "late": None, "intra": 3, "inter": 3}


def test_a_thread_count_from_the_environment_wins() -> None:
    result = probe(0.5, TF_NUM_INTRAOP_THREADS="2")
    assert result["set"] is None and result["intra"] == 0  # 0: TensorFlow's own choice (it reads the variable)
