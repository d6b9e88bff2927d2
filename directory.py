"""The people directory: staff who approve gates and answer escalations.

Configuration, not data: a YAML file (`TIDINGS_DIRECTORY_FILE`, the bundled
`directory.yaml` by default) listing each user's login, roles and how to
reach them. Workflow histories name users by login only; addresses are
resolved in activities when a reminder or escalation goes out.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from tidings.errors import InputError
from tidings.models.primitives import PositiveDuration, RoleName, UserName
from tidings.yamlspec import read_yaml, validate_yaml


class StaffMember(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    roles: list[RoleName] = Field(min_length=1)
    email: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    chat: str | None = None
    """A chat webhook URL (Slack or Teams) that reaches this person."""


class ContentReview(BaseModel):
    """Template versions submitted for review go through these roles in order (each
    an approval stage); a translation also goes to its language's council."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stages: list[RoleName] = Field(min_length=1)
    deadline: PositiveDuration = timedelta(days=3)
    remind_every: PositiveDuration | None = timedelta(days=1)
    councils: dict[str, RoleName] = {}
    """Language (fr, de) to the regional council that signs off its translations."""

    def roles_for(self, locale: str | None) -> list[str]:
        council = self.councils.get(locale.split("-")[0]) if locale else None
        return (
            [*self.stages, council] if council and council not in self.stages else list(self.stages)
        )


class Directory(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    users: dict[UserName, StaffMember] = {}
    content_review: ContentReview | None = None
    """Without it, template versions are approved directly (`tidings templates approve`)."""

    def user(self, login: str) -> StaffMember:
        member = self.users.get(login)
        if member is None:
            known = ", ".join(sorted(self.users)) or "none"
            raise UnknownUserError(
                f"{login!r} is not in the directory (users: {known}); add them to "
                "TIDINGS_DIRECTORY_FILE"
            )
        return member

    def with_role(self, role: str) -> list[str]:
        """Logins holding a role, in directory order."""
        return [login for login, member in self.users.items() if role in member.roles]


class UnknownUserError(InputError):
    """A login that the directory does not list."""


def load_directory(path: Path) -> Directory:
    data, node = read_yaml(path)
    return validate_yaml(Directory, data or {}, node, path, label=None)
