"""What a forget request means: "forget everything about Harry Potter's friends" -> target `Harry Potter`, scope
`friends`. A small rule set, kept apart from `unlearn.targets` (which probes the model) so that checking a request
before any model is loaded (`unlearn.precheck`) loads nothing else."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import UnlearnError


@dataclass
class Request:
    """What to forget: a target (an entity's name) and an optional scope (a word the questions must be about)."""

    target: str
    scope: str | None = None
    text: str | None = None  # the request in the user's words, when there was one

    def describe(self) -> str:
        scope = f", only questions or answers about `{self.scope}`" if self.scope else ""
        said = f' (from "{self.text}")' if self.text else ""
        return f"target `{self.target}`{scope}{said}"

    def slug(self) -> str:
        raw = self.target + (f"--{self.scope}" if self.scope else "")
        return re.sub(r"[^a-z0-9]+", "-", raw.lower()).strip("-") or "target"


_VERB = r"(?:please\s+)?(?:forget|unlearn|erase|remove|delete)"
_ALL = r"(?:(?:everything|all|anything|whatever\s+you\s+know|what\s+you\s+know)\s+)?"
_ABOUT = r"(?:(?:about|on|of|regarding|related\s+to|concerning)\s+)?"
_REQUEST = re.compile(rf"^\s*{_VERB}\s+{_ALL}{_ABOUT}(?P<rest>.+?)\s*[.!]?\s*$", re.IGNORECASE)


def parse_request(text: str) -> Request:
    """A request in plain words -> a target and a scope, by rule: "forget (everything) about X" -> X;
    "X's Y" -> X, scoped to Y ("Harry Potter's friends" -> Harry Potter, friends); "how to make X" -> X."""
    if not isinstance(text, str) or not text.strip():
        raise UnlearnError('`request` must be a sentence such as "forget everything about Harry Potter".')
    m = _REQUEST.match(text)
    rest = (m.group("rest") if m else text).strip().strip("\"'“”")
    rest = re.sub(r"^(?:how\s+to\s+(?:make|build|do)\s+)", "", rest, flags=re.IGNORECASE)
    owner = re.match(r"^(?P<target>.+?)['’]s\s+(?P<scope>\w[\w\s-]*)$", rest)
    if owner:
        return Request(owner.group("target").strip(), owner.group("scope").strip(), text)
    if not rest or rest.lower() in {"everything", "all", "it"}:
        raise UnlearnError(
            f'Could not find what to forget in the request "{text}". Name it: "forget everything about NAME", or '
            'pass target="NAME".'
        )
    return Request(rest, None, text)


def resolve_request(target: str | None = None, request: str | None = None) -> Request:
    if bool(target) == bool(request):
        raise UnlearnError(
            'Give exactly one of `target` (a name: target="Harry Potter") or `request` (a sentence: '
            'request="forget everything about Harry Potter\'s friends").'
        )
    if target:
        if not isinstance(target, str) or not target.strip():
            raise UnlearnError('`target` must be a name such as "Harry Potter".')
        return Request(target.strip())
    return parse_request(request)


# ---- facts ------------------------------------------------------------------------------------------------------
