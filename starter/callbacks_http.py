"""Provider callbacks: Twilio delivery status and inbound SMS; SendGrid email events.

Every request must carry a valid `X-Twilio-Signature` over the public URL
Twilio called (`TIDINGS_PUBLIC_URL` + path) and its form parameters; an
unsigned or badly signed request is refused with 403 and changes nothing.

- `POST /callbacks/twilio/status`: a status change of a message we sent,
  kept in the delivery's status history (deduplicated: Twilio retries).
  A number the carrier says does not exist is suppressed.
- `POST /inbound/twilio/sms`: a text from a contact. STOP, START and HELP
  act on the consent ledger at once (a sleeping journey's next SMS is
  skipped) and the reply goes back as TwiML.
- `POST /callbacks/sendgrid/events`: SendGrid's signed event webhook (ECDSA);
  bounces, drops and complaints suppress the address (see db/delivery_reports).
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape

import structlog
from fastapi import APIRouter, HTTPException, Request, Response
from sqlmodel import Session

from tidings.activities.channels.sendgrid import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    EmailEvent,
    parse_events,
    verify_event_webhook,
)
from tidings.activities.channels.twilio import verify_twilio_signature
from tidings.db import delivery_reports
from tidings.db.engine import Database
from tidings.errors import InputError
from tidings.starter.policy_admin import PolicyAdmin

log = structlog.get_logger(__name__)

TWILIO_STATUSES = {
    "accepted": "queued",
    "queued": "queued",
    "sending": "queued",
    "sent": "sent",
    "delivered": "delivered",
    "undelivered": "failed",
    "failed": "failed",
    "read": "opened",
}
SENDGRID_STATUSES = {
    "queued": "queued",
    "delivered": "delivered",
    "deferred": "queued",
    "bounced": "bounced",
    "dropped": "failed",
    "opened": "opened",
    "clicked": "clicked",
    "complained": "complained",
}
"""Event kinds kept in a delivery's history (unsubscribes go through the ledger instead)."""
DEAD_NUMBER_CODES = {"30005", "30006"}
"""Unknown destination, landline or unreachable carrier: this number will never take SMS."""


def callbacks_router(
    *,
    database: Database,
    admin: PolicyAdmin,
    twilio_auth_token: str,
    public_url: str,
    sendgrid_public_key: str = "",
) -> APIRouter:
    router = APIRouter()

    async def signed_form(request: Request) -> dict[str, str]:
        form = {key: str(value) for key, value in (await request.form()).items()}
        if not twilio_auth_token:
            raise HTTPException(
                403, "Twilio callbacks are not configured: set TIDINGS_TWILIO_AUTH_TOKEN"
            )
        url = public_url.rstrip("/") + request.url.path
        if request.url.query:
            url += "?" + request.url.query
        signature = request.headers.get("x-twilio-signature", "")
        if not verify_twilio_signature(twilio_auth_token, url, form, signature):
            log.warning("refused a badly signed Twilio callback", path=request.url.path)
            raise HTTPException(403, "bad or missing X-Twilio-Signature")
        return form

    @router.post("/callbacks/twilio/status", status_code=204)
    async def twilio_status(request: Request) -> Response:
        form = await signed_form(request)
        sid, status = form.get("MessageSid", ""), form.get("MessageStatus", "")
        if not sid or status not in TWILIO_STATUSES:
            raise HTTPException(400, "expected MessageSid and a known MessageStatus")
        code = form.get("ErrorCode") or None
        await database.run(lambda session: _record_status(session, sid, status, code))
        return Response(status_code=204)

    @router.post("/inbound/twilio/sms")
    async def twilio_inbound(request: Request) -> Response:
        form = await signed_form(request)
        try:
            answer = await admin.inbound_sms(form.get("From", ""), form.get("Body", ""))
        except InputError as err:
            raise HTTPException(400, str(err)) from None
        reply = f"<Message>{escape(answer.reply)}</Message>" if answer.reply else ""
        return Response(
            f'<?xml version="1.0" encoding="UTF-8"?><Response>{reply}</Response>',
            media_type="application/xml",
        )

    @router.post("/callbacks/sendgrid/events", status_code=204)
    async def sendgrid_events(request: Request) -> Response:
        payload = await request.body()
        signature = request.headers.get(SIGNATURE_HEADER, "")
        timestamp = request.headers.get(TIMESTAMP_HEADER, "")
        if not sendgrid_public_key:
            raise HTTPException(
                403, "SendGrid events are not configured: set TIDINGS_SENDGRID_WEBHOOK_KEY"
            )
        if not verify_event_webhook(sendgrid_public_key, payload, signature, timestamp):
            log.warning("refused a badly signed SendGrid event batch")
            raise HTTPException(403, "bad or missing SendGrid event webhook signature")
        try:
            events = parse_events(payload)
        except ValueError as err:
            raise HTTPException(400, f"not a SendGrid event batch: {err}") from None
        await database.run(lambda session: _record_sendgrid(session, events))
        return Response(status_code=204)

    return router


def _record_sendgrid(session: Session, events: list[EmailEvent]) -> None:
    for event in events:
        if event.kind not in SENDGRID_STATUSES:
            continue
        bounce = event.bounce_class
        delivery_reports.record(
            session=session,
            provider="sendgrid",
            report=delivery_reports.DeliveryReport(
                delivery_id=event.delivery_id,
                provider_message_id=event.send_message_id,
                status=SENDGRID_STATUSES[event.kind],
                provider_status=f"bounce:{bounce}" if bounce else event.event,
                event_id=event.event_id,
                code=event.status or None,
                suppress=event.suppress_reason(),
                at=event.at,
            ),
        )


def _record_status(session: Session, sid: str, status: str, code: str | None) -> None:
    recorded = delivery_reports.record(
        session=session,
        provider="twilio",
        report=delivery_reports.DeliveryReport(
            delivery_id=None,
            provider_message_id=sid,
            status=TWILIO_STATUSES[status],
            provider_status=status,
            event_id=f"{sid}:{status}",
            code=code,
            suppress="invalid_number" if code in DEAD_NUMBER_CODES else None,
            at=datetime.now(UTC),
        ),
    )
    if not recorded:
        log.info("status for a message we do not know, or again", provider="twilio")
