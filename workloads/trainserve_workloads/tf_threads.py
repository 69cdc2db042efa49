"""TensorFlow's thread pools sized to a process's CPU share instead of every core of the node.

TensorFlow sizes its intra-op and inter-op pools to the node's cores, so two processes sharing a node (two Ray
Train workers, or serving replicas) each start a pool per core and hand ops to threads that cannot run: they
fight for the same cores (figures: docs/performance.md).
"""

from __future__ import annotations

import math
import os


def size_thread_pools(cpus: float | None) -> int | None:
    """Both pools to ``cpus`` threads (rounded up, at least one); ``TF_NUM_INTRAOP_THREADS`` or
    ``TF_NUM_INTEROP_THREADS``, when set, win. Must run before TensorFlow's context starts; returns the thread
    count set, or None when it left TensorFlow alone."""
    if not cpus or cpus <= 0 or os.environ.get("TF_NUM_INTRAOP_THREADS") or os.environ.get("TF_NUM_INTEROP_THREADS"):
        return None
    import tensorflow as tf

    threads = max(1, math.ceil(cpus))
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # the context already runs: too late to change
        return None
    return threads
