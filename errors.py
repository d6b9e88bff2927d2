"""Errors a user can cause; each message names the thing and the fix."""

from __future__ import annotations

from pydantic import ValidationError


class TidingsError(Exception):
    """Base for every error caused by input rather than by a bug."""


class SpecError(TidingsError):
    """A journey or template file is invalid; carries every problem found."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class InputError(TidingsError):
    """A contact, event or command argument is malformed."""


class UnknownContactError(TidingsError):
    """An operation named a contact key that has never been identified."""

    def __init__(self, contact_key: str) -> None:
        self.contact_key = contact_key
        super().__init__(
            f"contact {contact_key!r} is unknown; create it first with "
            f"`tidings identify {contact_key} --email ...` (or client.identify)"
        )


class UnknownReferenceError(UnknownContactError):
    """A `kind:value` reference (email:..., external:stripe:...) that no contact has."""

    def __init__(self, reference: str) -> None:
        self.contact_key = reference
        TidingsError.__init__(
            self,
            f"no contact has the identity {reference!r}; give it to the contact first "
            "(`tidings identify KEY` with it, or client.identify), or name the contact "
            "by its key",
        )


def input_error(what: str, err: ValidationError) -> InputError:
    """One InputError listing each invalid field of `what` and why."""
    lines = []
    for error in err.errors():
        field = ".".join(str(part) for part in error["loc"]) or what
        lines.append(f"{field}: {error['msg'].removeprefix('Value error, ')}")
    return InputError(f"invalid {what}: " + "; ".join(lines))
