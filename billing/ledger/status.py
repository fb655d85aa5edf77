"""Invoice status moves forward only: the same rule for webhooks (any order, any number of times), the
billing cycle's own reads of Stripe, and missed events recovered later.

A status of lower rank never replaces one of higher rank; at equal rank the newer event wins. ``paid``
and ``void`` are final (an ``uncollectible`` invoice may still be paid).
"""

from __future__ import annotations

from datetime import datetime

from billing.ledger.models import Invoice

__all__ = ["RANK", "advance"]

RANK = {"draft": 0, "open": 1, "uncollectible": 2, "paid": 3, "void": 3}


def advance(invoice: Invoice, status: str, *, event_at: int | None, now: datetime) -> bool:
    """Apply Stripe's ``status`` (seen at ``event_at``, Stripe's unix time; ``None`` = a live read).
    True when the ledger changed."""
    if status not in RANK:
        return False
    current = invoice.stripe_status or "draft"
    if RANK[status] < RANK[current]:
        return False  # older news
    if RANK[status] == RANK[current]:
        if status != current:  # paid vs void: both final, the first one stands
            return False
        if event_at is not None and invoice.stripe_event_at is not None and event_at < invoice.stripe_event_at:
            return False
    changed = status != current
    invoice.stripe_status = status
    if event_at is not None:
        invoice.stripe_event_at = max(invoice.stripe_event_at or 0, event_at)
    if status == "open" and invoice.status == "draft":
        invoice.status = "open"
    elif status == "paid" and invoice.status != "paid":
        invoice.status, invoice.paid_at = "paid", invoice.paid_at or now
        invoice.payment_state = "succeeded"
        changed = True
    elif status == "void" and invoice.status != "void":
        invoice.status, invoice.voided_at = "void", invoice.voided_at or now
        changed = True
    elif status == "uncollectible" and invoice.status in ("draft", "open"):
        invoice.status = "uncollectible"
        changed = True
    return changed
