"""What a usage record measures, in which unit, and its deterministic id.

A record says "this job held ``allocated`` of ``resource`` from ``window_start`` to ``window_end``";
``quantity = allocated x whole seconds`` in the record's unit:

==========  ===================  =====================  ==============================
resource    allocated in         quantity unit          shown and priced as
==========  ===================  =====================  ==============================
vcpu        millicores           ``millicore_seconds``  vCPU-hours (/ 3,600,000)
memory      bytes                ``byte_seconds``       GiB-hours (/ 2**30 / 3600)
gpu         GPUs (by type)       ``gpu_seconds``        GPU-hours (/ 3600)
storage     bytes (a volume)     ``byte_seconds``       GiB-months (/ 2**30 / 730 h)
==========  ===================  =====================  ==============================

Integers all the way: sums are exact, and the free allowance (``billing.usage.allowance``) works on
integer levels over integer seconds. The id is ``uuid5(NAMESPACE, "subject|resource|gpu_type|epoch")``
with ``epoch`` the window start in whole seconds. Because the id determines the window start, a
unique key on ``(id, window_start)`` (which a partitioned table needs) is as strong as one on ``id``.
The agent computes the same id (``connectors.agent.usage.record_id``; a test keeps the two equal).
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from decimal import Decimal

__all__ = [
    "GIB",
    "NAMESPACE",
    "RESOURCES",
    "SECONDS_PER_MONTH",
    "UNITS",
    "display_quantity",
    "display_unit",
    "record_id",
    "record_id_text",
]

NAMESPACE = uuid.UUID("6d1f0b0e-5b8e-4a59-9d0c-3c3f4f7a8e21")
GIB = 1 << 30
SECONDS_PER_MONTH = 730 * 3600  # a "GiB-month" is 730 hours, as cloud providers price storage

UNITS: dict[str, str] = {
    "vcpu": "millicore_seconds",
    "memory": "byte_seconds",
    "gpu": "gpu_seconds",
    "storage": "byte_seconds",
}
RESOURCES = tuple(UNITS)

# quantity / divisor = the unit people read and prices use
_DISPLAY: dict[str, tuple[str, int]] = {
    "vcpu": ("vCPU-hours", 1000 * 3600),
    "memory": ("GiB-hours", GIB * 3600),
    "gpu": ("GPU-hours", 3600),
    "storage": ("GiB-months", GIB * SECONDS_PER_MONTH),
}


def record_id(subject: str, resource: str, gpu_type: str, window_start: datetime | int) -> uuid.UUID:
    """The one id of (job or volume, resource, GPU type, window start): a resend is the same record."""
    epoch = window_start if isinstance(window_start, int) else int(window_start.timestamp())
    return uuid.uuid5(NAMESPACE, f"{subject}|{resource}|{gpu_type}|{epoch}")


_NS = NAMESPACE.bytes


def record_id_text(subject: str, resource: str, gpu_type: str, epoch: int) -> str:
    """``str(record_id(...))`` without building UUID objects: ingest checks thousands per batch."""
    digest = bytearray(hashlib.sha1(_NS + f"{subject}|{resource}|{gpu_type}|{epoch}".encode(),
                                    usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def display_unit(resource: str) -> str:
    return _DISPLAY[resource][0]


def display_quantity(resource: str, quantity: int, places: int = 4) -> Decimal:
    """``quantity`` (base units) in the unit people read, rounded for display only."""
    exact = Decimal(quantity) / Decimal(_DISPLAY[resource][1])
    return exact.quantize(Decimal(1).scaleb(-places))
