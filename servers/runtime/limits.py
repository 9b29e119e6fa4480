"""Request size limits and concurrent-stream limits, enforced by the server interceptor.

Sizes come from the contract: an RPC's ``(foodmesh.v1.max_request_bytes)`` bounds each
request message (serialized), and a repeated field's ``(foodmesh.v1.max_items)`` bounds
its element count. Both are checked when the message is decoded, before the handler
sees it, so an oversized request costs one length check (and a bounded parse), never
work per element. gRPC Python has one receive limit per server, hence the check here.

Streams are counted per caller and method, and per caller and order: one token may
hold only a few of them open at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, cast

from google.protobuf import descriptor, descriptor_pool
from google.protobuf.message import Message

from foodmesh.core.errors import FoodmeshError, InvalidArgument, ResourceExhausted
from foodmesh.v1 import options_pb2

__all__ = [
    "DEFAULT_MAX_REQUEST_BYTES",
    "MAX_REQUEST_BYTES",
    "Refused",
    "count_violation",
    "guarded_deserializer",
    "guarded_requests",
    "max_items",
    "max_request_bytes",
]

#: The limit of a method without ``max_request_bytes``: requests of ids and scalars.
DEFAULT_MAX_REQUEST_BYTES = 64 * 1024
#: The server's own receive limit: the largest any method declares (a menu write).
MAX_REQUEST_BYTES = 4 * 1024 * 1024

Deserializer = Callable[[bytes], Any]


def _method(path: str) -> descriptor.MethodDescriptor | None:
    """``/foodmesh.v1.OrderService/PlaceOrder`` -> its descriptor (None: not ours)."""
    service, _, name = path.lstrip("/").partition("/")
    try:
        svc = descriptor_pool.Default().FindServiceByName(service)
    except KeyError:
        return None
    return svc.methods_by_name.get(name)


def max_request_bytes(path: str) -> int:
    """The largest request message the method at ``path`` takes."""
    method = _method(path)
    if method is None:
        return DEFAULT_MAX_REQUEST_BYTES
    declared = int(method.GetOptions().Extensions[options_pb2.max_request_bytes])
    return declared or DEFAULT_MAX_REQUEST_BYTES


def max_items(desc: descriptor.Descriptor, name: str) -> int:
    """The declared element cap of the repeated field ``name`` of ``desc`` (0: none)."""
    return int(desc.fields_by_name[name].GetOptions().Extensions[options_pb2.max_items])


@dataclass(frozen=True, slots=True)
class _Check:
    field: descriptor.FieldDescriptor
    cap: int
    #: The field's message type has capped fields of its own somewhere below.
    descend: bool


_checks: dict[str, tuple[_Check, ...]] = {}


def _plan(
    desc: descriptor.Descriptor, visiting: frozenset[str] = frozenset()
) -> tuple[_Check, ...]:
    """The fields of ``desc`` to check: capped ones, and messages that hold capped ones."""
    cached = _checks.get(desc.full_name)
    if cached is not None:
        return cached
    found: list[_Check] = []
    inner = visiting | {desc.full_name}
    for f in desc.fields:
        cap = int(f.GetOptions().Extensions[options_pb2.max_items]) if f.is_repeated else 0
        sub = f.message_type
        descend = (
            sub is not None
            and not sub.GetOptions().map_entry
            and sub.full_name not in inner
            and bool(_plan(sub, inner))
        )
        if cap or descend:
            found.append(_Check(f, cap, descend))
    plan = tuple(found)
    if not visiting or not any(c.descend for c in plan):
        _checks[desc.full_name] = plan
    return plan


def count_violation(msg: Message, prefix: str = "") -> tuple[str, int] | None:
    """The first repeated field of ``msg`` over its ``max_items``: (its path, the cap)."""
    for c in _plan(cast(descriptor.Descriptor, msg.DESCRIPTOR)):
        name = c.field.name
        if c.field.is_repeated:
            items = getattr(msg, name)
            if c.cap and len(items) > c.cap:
                return f"{prefix}{name}", c.cap
            if c.descend:
                for i, item in enumerate(items):
                    if (bad := count_violation(item, f"{prefix}{name}[{i}].")) is not None:
                        return bad
        elif c.descend and msg.HasField(name):
            if (bad := count_violation(getattr(msg, name), f"{prefix}{name}.")) is not None:
                return bad
    return None


class Refused:
    """What a guarded deserializer returns for a request it refuses: the error to answer."""

    __slots__ = ("error",)

    def __init__(self, error: FoodmeshError) -> None:
        self.error = error


def guarded_deserializer(path: str, inner: Deserializer | None) -> Deserializer | None:
    """``inner``, refusing messages over the method's byte limit or a field's item cap.

    It returns a :class:`Refused` rather than raising: gRPC turns an exception in a
    deserializer into an opaque error, the interceptor answers a Refused cleanly.
    """
    if inner is None:
        return None
    limit = max_request_bytes(path)
    method = _method(path)
    counted = method is not None and bool(_plan(method.input_type))

    def deserialize(data: bytes) -> Any:
        if len(data) > limit:
            return Refused(
                ResourceExhausted(
                    f"the request message is {len(data)} bytes; this method takes at most {limit}",
                    reason="MESSAGE_TOO_LARGE",
                )
            )
        msg = inner(data)
        if counted and (bad := count_violation(msg)) is not None:
            field, cap = bad
            return Refused(InvalidArgument.field(field, f"at most {cap} items"))
        return msg

    return deserialize


async def guarded_requests(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """A request stream that ends the call at the first refused message."""
    async for item in requests:
        if isinstance(item, Refused):
            raise item.error
        yield item
