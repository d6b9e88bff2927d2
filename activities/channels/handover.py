"""The point of no return: the moment a message can first reach a vendor, marked durably.

A send that dies before its mark provably handed nothing over, so the next
attempt may send it; one that dies after it may have delivered, so the next
attempt must not. The later the mark, the fewer messages a crash leaves in
doubt: SMTP marks after the server's 354 (ready for the body), not when the
connection opens.

The send activity installs the mark (`marking`) around the provider call; a
provider calls `point_of_no_return()` just before the first byte that could
deliver the message leaves. The mark runs once per send; it commits the
delivery's `sending` state and raises `Superseded` when another attempt has
taken the delivery meanwhile, in which case the provider must stop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_mark: ContextVar[Callable[[], None] | None] = ContextVar("tidings_handover_mark", default=None)


class Superseded(Exception):
    """A later attempt took the delivery while this one was on its way: send nothing."""


def point_of_no_return() -> None:
    """Mark the hand-over, once; outside a send activity (a preview, a test) it does nothing."""
    mark = _mark.get()
    if mark is not None:
        _mark.set(None)
        mark()


def take() -> Callable[[], None] | None:
    """This send's pending mark, removed from it: for a provider that hands the message
    over from another thread (a batch sent by one of its members). Whoever takes the
    mark must run it before the message can leave, or not send the message at all."""
    mark = _mark.get()
    _mark.set(None)
    return mark


@contextmanager
def marking(mark: Callable[[], None]) -> Iterator[None]:
    """Run `mark` when the provider inside reaches its point of no return."""
    token = _mark.set(mark)
    try:
        yield
    finally:
        _mark.reset(token)
