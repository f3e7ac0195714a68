"""The mailbox route: documents for the district's own units wait in their inbox.

Pull mode: the queue manager never dispatches these deliveries; the
recipient's system fetches ``GET /v1/inbox`` and acknowledges each document
(``POST /v1/inbox/{id}/ack``), which makes the delivery ``delivered``.
"""
from __future__ import annotations

from adapters.base import Adapter, DeliveryRequest, Outcome


class MailboxAdapter(Adapter):
    pull = True

    async def deliver(self, req: DeliveryRequest) -> Outcome:  # never dispatched
        return Outcome.defer("mailbox deliveries wait for the recipient to fetch them")
