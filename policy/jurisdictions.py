"""Jurisdiction rule packs: data plus small pure functions, one pack per body of law.

A contact's jurisdiction (US-FL, CA-ON, DE) selects the packs that apply;
sector packs (HIPAA) are switched on in `policy.yaml`. Where a contact has
no jurisdiction, or one no pack knows, the strict default applies: opt-in
consent for marketing on email, SMS and calls, and 08:00-20:00 local for
SMS and calls. These packs encode common, conservative readings of each law
for automated lifecycle messaging; they are not legal advice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta

from dateutil.relativedelta import relativedelta

from tidings.models.policy import Cap, SendWindow

EXPRESS = frozenset({"express", "express_written"})
EXPRESS_WRITTEN = frozenset({"express_written"})
CASL_CONSENT = frozenset({"express", "express_written", "implied_purchase", "implied_inquiry"})

ALL_BUT_CRITICAL = frozenset({"marketing", "service", "transactional"})
CALLS = frozenset({"sms", "voice"})
ELECTRONIC = frozenset({"email", "sms", "voice"})
ANY_CHANNEL = frozenset({"email", "sms", "voice", "push", "chat", "in_app", "webhook"})

# EU and EEA member states, plus the UK (UK GDPR and PECR work alike here).
GDPR_COUNTRIES = frozenset(
    [
        "AT",
        "BE",
        "BG",
        "HR",
        "CY",
        "CZ",
        "DK",
        "EE",
        "FI",
        "FR",
        "DE",
        "GR",
        "HU",
        "IE",
        "IT",
        "LV",
        "LT",
        "LU",
        "MT",
        "NL",
        "PL",
        "PT",
        "RO",
        "SK",
        "SI",
        "ES",
        "SE",
        "IS",
        "LI",
        "NO",
        "GB",
    ]
)


@dataclass(frozen=True)
class ConsentRule:
    """Consent a message needs: a current grant with one of `bases`."""

    name: str
    bases: frozenset[str]
    legitimate_interest: bool = False
    """Legitimate interest also counts, unless the contact objected (GDPR)."""


@dataclass(frozen=True)
class WindowRule:
    name: str
    channels: frozenset[str]
    purposes: frozenset[str]
    window: SendWindow


@dataclass(frozen=True)
class RulePack:
    name: str
    windows: tuple[WindowRule, ...] = ()
    consent: tuple[tuple[frozenset[str], frozenset[str], ConsentRule], ...] = ()
    """(channels, purposes, rule)."""
    caps: tuple[Cap, ...] = ()
    implied_consent_lasts: dict[str, relativedelta] = field(default_factory=dict)
    revocation: str = ""
    """How the pack names an honored opt-out, for explanations."""
    revocation_channels: frozenset[str] = frozenset()

    def consent_rule(self, channel: str, purpose: str) -> ConsentRule | None:
        for channels, purposes, rule in self.consent:
            if channel in channels and purpose in purposes:
                return rule
        return None

    def consent_expiry(self, basis: str | None, effective_at: datetime) -> datetime | None:
        lasts = self.implied_consent_lasts.get(basis or "")
        return effective_at + lasts if lasts else None


def _window(start: int, end: int) -> SendWindow:
    return SendWindow(start=time(start), end=time(end))


US_TCPA = RulePack(
    name="US TCPA",
    windows=(WindowRule("US TCPA", CALLS, frozenset({"marketing", "service"}), _window(8, 21)),),
    consent=(
        (
            CALLS,
            frozenset({"marketing"}),
            ConsentRule(
                "US TCPA: marketing texts and calls need prior express written consent",
                EXPRESS_WRITTEN,
            ),
        ),
    ),
    revocation="US TCPA: a revocation is honored at once",
    revocation_channels=CALLS,
)

CAN_SPAM = RulePack(
    name="CAN-SPAM",
    revocation="CAN-SPAM: an opt-out is honored at once (the law allows 10 business days)",
    revocation_channels=frozenset({"email"}),
)

US_FLORIDA = RulePack(
    name="Florida FTSA",
    windows=(WindowRule("Florida FTSA", CALLS, frozenset({"marketing"}), _window(8, 20)),),
    caps=(
        Cap(
            name="Florida FTSA: 3 marketing texts or calls per 24 h on one topic",
            max=3,
            per=timedelta(days=1),
            purposes=["marketing"],
            channels=["sms", "voice"],
            per_topic=True,
        ),
    ),
)

CASL = RulePack(
    name="CASL",
    consent=(
        (
            ELECTRONIC,
            frozenset({"marketing"}),
            ConsentRule(
                "CASL: commercial messages need express or unexpired implied consent", CASL_CONSENT
            ),
        ),
    ),
    implied_consent_lasts={
        "implied_purchase": relativedelta(years=2),
        "implied_inquiry": relativedelta(months=6),
    },
    revocation="CASL: an unsubscribe is honored at once (the law allows 10 business days)",
    revocation_channels=ELECTRONIC,
)

GDPR = RulePack(
    name="GDPR",
    consent=(
        (
            ELECTRONIC | {"push", "chat"},
            frozenset({"marketing"}),
            ConsentRule(
                "GDPR: direct marketing needs consent, or legitimate interest without objection",
                EXPRESS,
                legitimate_interest=True,
            ),
        ),
    ),
    revocation="GDPR: a withdrawal or objection is honored at once",
    revocation_channels=ANY_CHANNEL,
)

HIPAA = RulePack(
    name="HIPAA",
    consent=(
        (
            ANY_CHANNEL,
            frozenset({"marketing"}),
            ConsentRule(
                "HIPAA: marketing needs the patient's written authorization", EXPRESS_WRITTEN
            ),
        ),
    ),
)

STRICT_DEFAULT = RulePack(
    name="strict default (unknown jurisdiction)",
    windows=(
        WindowRule("strict default", CALLS, frozenset({"marketing", "service"}), _window(8, 20)),
    ),
    consent=(
        (
            ELECTRONIC,
            frozenset({"marketing"}),
            ConsentRule("strict default: marketing needs express consent", EXPRESS),
        ),
    ),
    revocation="an opt-out is honored at once",
    revocation_channels=ANY_CHANNEL,
)

SECTOR_PACKS = {"hipaa": HIPAA}


def packs_for(jurisdiction: str | None, sectors: Sequence[str] = ()) -> list[RulePack]:
    """The packs that govern a contact in `jurisdiction` (e.g. "US-FL")."""
    country, _, region = (jurisdiction or "").partition("-")
    packs: list[RulePack]
    if country == "US":
        packs = [US_TCPA, CAN_SPAM] + ([US_FLORIDA] if region == "FL" else [])
    elif country == "CA":
        packs = [CASL]
    elif country in GDPR_COUNTRIES:
        packs = [GDPR]
    else:
        packs = [STRICT_DEFAULT]
    return packs + [SECTOR_PACKS[name] for name in sectors]


def matches_region(jurisdiction: str | None, regions: list[str]) -> bool:
    """Whether a contact's jurisdiction falls in one of `regions` (US covers US-FL)."""
    if not regions:
        return True
    if jurisdiction is None:
        return False
    country = jurisdiction.partition("-")[0]
    return jurisdiction in regions or country in regions
