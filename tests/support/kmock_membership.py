"""A linear-time answer to "does this view see this request?" for kmock's servers.

kmock 0.8 picks the reaction to a request by asking each reaction's view whether it contains the request
(``RawHandler._handle``), and a view answers by filtering every request the server has had so far
(``View.__contains__``). A request thus costs as much as the whole log before it, and a test's requests cost the
square of their number: the chaos test's emulator spent a whole core for most of a minute on about 600 requests.

The views our emulators dispatch on are chains of filters and priorities over the server itself. For those,
membership depends on the request alone: it passes every filter's criteria, and the server has logged it. This
answers such chains from the request and leaves every other view (slices, groups, exclusions, streams) to kmock,
whose answer for them depends on the requests before it.
"""

from __future__ import annotations

from typing import Any

from kmock._internal import dsl, rendering

_kmock_contains = dsl.View.__contains__


def _member_of_chain(view: dsl.View, request: rendering.Request) -> bool | None:
    """The answer for a chain of plain filters and priorities ending at a server; None for any other view."""
    node: dsl.View = view
    while True:
        if isinstance(node, dsl.Root):
            if type(node).__iter__ is not dsl.Root.__iter__:
                return None
            # The request being dispatched is the newest, or nearly (requests are handled concurrently).
            return any(seen is request for seen in reversed(node._requests))
        if type(node) is dsl.Filter:
            if not node.criteria(request):
                return False
        elif type(node) is not dsl.Priority:
            return None
        node = node._source


def _contains(view: dsl.View, item: Any) -> bool:
    if isinstance(item, rendering.Request):
        answer = _member_of_chain(view, item)
        if answer is not None:
            return answer
    return bool(_kmock_contains(view, item))


def install() -> None:
    """Idempotent: every emulator of the process dispatches in linear time from then on."""
    dsl.View.__contains__ = _contains  # type: ignore[method-assign]
