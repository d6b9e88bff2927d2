"""The baseline: onboarding written by hand as a plain Temporal workflow.

It runs the same activities a tidings journey runs for onboarding: the entry
and exit bookkeeping (local activities; they are what keeps reentry rules
after Temporal purges histories), the contact-policy check before each send
(a local activity), and the three sends, with the same timers. With
`bookkeeping=False` it runs the sends and timers only, for a second, stricter
figure. No spec, no interpreter, no status for operators.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from tidings import naming
    from tidings.activities.journal import JourneyJournal
    from tidings.activities.policy import PolicyGate
    from tidings.activities.send import MessageSender
    from tidings.models.events import JourneyEvent
    from tidings.models.journey import Reentry
    from tidings.models.workflow_io import (
        EnterJourneyInput,
        ExitJourneyInput,
        PolicyCheckInput,
        SendInput,
    )
    from tidings.workflows.interpreter import (
        LOCAL_ACTIVITY_TIMEOUT,
        SEND_DEADLINE,
        SEND_RETRY,
        SEND_TIMEOUT,
    )


class BareInput(BaseModel):
    contact_key: str
    trigger: JourneyEvent
    steps: list[tuple[str, str, float]]
    """(step id, template, seconds to wait afterwards)."""
    bookkeeping: bool = True


@workflow.defn(name="BareOnboarding")
class BareOnboarding:
    @workflow.run
    async def run(self, input: BareInput) -> int:
        if input.bookkeeping:
            await workflow.execute_local_activity_method(
                JourneyJournal.enter_journey,
                EnterJourneyInput(
                    journey="bare-onboarding",
                    version=1,
                    contact_key=input.contact_key,
                    workflow_id=workflow.info().workflow_id,
                    run_id=workflow.info().run_id,
                    reentry=Reentry(policy="never"),
                    now=workflow.now(),
                ),
                start_to_close_timeout=LOCAL_ACTIVITY_TIMEOUT,
            )
        sent = 0
        for step_id, template, wait_seconds in input.steps:
            key = f"{workflow.info().workflow_id}/{step_id}"
            if template and input.bookkeeping:
                await workflow.execute_local_activity_method(
                    PolicyGate.check_policy,
                    PolicyCheckInput(
                        idempotency_key=key,
                        contact_key=input.contact_key,
                        journey="bare-onboarding",
                        step_id=step_id,
                        channel="email",
                        template=template,
                        purpose="service",
                        topic="onboarding",
                        now=workflow.now(),
                    ),
                    start_to_close_timeout=LOCAL_ACTIVITY_TIMEOUT,
                )
            if template:
                result = await workflow.execute_activity_method(
                    MessageSender.send_email,
                    SendInput(
                        idempotency_key=key,
                        journey="bare-onboarding",
                        version=1,
                        step_id=step_id,
                        contact_key=input.contact_key,
                        template=template,
                        purpose="service",
                        topic="onboarding",
                        trigger=input.trigger,
                        event=input.trigger,
                        scheduled_at=workflow.now(),
                    ),
                    task_queue=naming.EMAIL_TASK_QUEUE,
                    start_to_close_timeout=SEND_TIMEOUT,
                    schedule_to_close_timeout=SEND_DEADLINE,
                    retry_policy=SEND_RETRY,
                )
                sent += result.status == "sent"
            if wait_seconds:
                await workflow.sleep(timedelta(seconds=wait_seconds))
        if input.bookkeeping:
            await workflow.execute_local_activity_method(
                JourneyJournal.exit_journey,
                ExitJourneyInput(
                    journey="bare-onboarding",
                    contact_key=input.contact_key,
                    entry=1,
                    outcome="completed",
                    reason="reached the end",
                    now=workflow.now(),
                ),
                start_to_close_timeout=LOCAL_ACTIVITY_TIMEOUT,
            )
        return sent
