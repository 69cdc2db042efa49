"""Hypothesis strategies for request bodies that are almost, but not quite, valid inference requests."""

from __future__ import annotations

import json

from hypothesis import strategies as st

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
V2_TENSORS = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["features", "x", ""]) | st.integers(),
        "shape": st.lists(st.integers(-2, 70), max_size=3) | JSON_VALUES,
        "datatype": st.sampled_from(["FP32", "INT8", "BYTES", "BOOL", "fp32", "FP128"]) | JSON_VALUES,
        "data": st.lists(
            st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(2**70), 2**70) | st.text(max_size=2),
            max_size=130,
        )
        | JSON_VALUES,
    },
)
BODIES = st.one_of(
    st.binary(max_size=64),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({}, optional={"instances": JSON_VALUES, "inputs": JSON_VALUES}).map(
        lambda v: json.dumps(v).encode()
    ),
    st.fixed_dictionaries(
        {"inputs": st.lists(V2_TENSORS, max_size=2)}, optional={"id": JSON_VALUES, "outputs": JSON_VALUES}
    ).map(lambda v: json.dumps(v).encode()),
)
