"""Strings a tenant writes that reach a host: names that can never be paths, and text free of
the characters a libvirt domain's XML cannot carry. Pure.

Each rule exists twice from one definition: a pydantic check (the webhook and the agent parse
with these models) and a CEL rule with the same message in the generated CRD, so the API server
refuses a bad value before any webhook runs and the message reads the same either way.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field

from kubenova.api.meta import cel

PLAIN_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
"""A DNS-1123 subdomain (what a cluster-scoped object may be called): lower-case letters,
digits, '-' and single dots between them. It cannot hold '/', cannot be '.' or '..' and cannot
start with a dot, so a name joined to a folder stays in that folder."""
NETWORK_NAME = r"^[A-Za-z0-9]([-A-Za-z0-9_]*[A-Za-z0-9])?$"
"""A libvirt network or host bridge name as kubenova accepts it: letters, digits, '-', '_'."""

# U+0000-U+001F (C0, tab and newlines too), DEL, C1, the two non-characters XML forbids, and
# surrogates (a Python string can hold a lone one; the API server never sends one).
_CONTROL_PY = re.compile("[\x00-\x1f\x7f-\x9f\ufffe\uffff\ud800-\udfff]")
_CONTROL_CEL = r"[\\x00-\\x1f\\x7f-\\x9f\\x{fffe}\\x{ffff}]"
"""The same class for RE2 inside a CEL string literal (backslashes doubled for CEL)."""


def _cel_literal(pattern: str) -> str:
    """`pattern` inside a single-quoted CEL string (CEL knows no escape like '\\.')."""
    return pattern.replace("\\", "\\\\")


_plain = re.compile(PLAIN_NAME)
_network = re.compile(NETWORK_NAME)

PLAIN_NAME_MESSAGE = (
    "must be a plain name, not a path: lower-case letters, digits, '-' and single '.' "
    "between them (like debian-12.qcow2); no '/', no '..'"
)
NETWORK_NAME_MESSAGE = "must be a network name: letters, digits, '-' and '_' (like default)"
CONTROL_MESSAGE = "must not contain control characters (U+0000-U+001F, U+007F-U+009F)"


def control_character(value: str) -> str | None:
    """The first character of `value` that a single-line string reaching the domain XML may
    not hold, as 'U+XXXX', or None."""
    m = _CONTROL_PY.search(value)
    return f"U+{ord(m.group()):04X}" if m else None


def _check_plain(value: str) -> str:
    if not _plain.fullmatch(value):  # not match(): '$' would let a final newline through
        raise ValueError(PLAIN_NAME_MESSAGE)
    return value


def _check_network(value: str) -> str:
    if not _network.fullmatch(value):
        raise ValueError(NETWORK_NAME_MESSAGE)
    return value


def _check_single_line(value: str) -> str:
    bad = control_character(value)
    if bad:
        raise ValueError(f"{CONTROL_MESSAGE}; found {bad}")
    return value


def is_plain_name(value: str) -> bool:
    return bool(_plain.fullmatch(value)) and len(value) <= 253


PlainName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=253,
        json_schema_extra=cel(f"self.matches('{_cel_literal(PLAIN_NAME)}')", PLAIN_NAME_MESSAGE),
    ),
    AfterValidator(_check_plain),
]
"""The name of something an administrator made available (an image, a kernel, a Secret)."""

NetworkName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=63,
        json_schema_extra=cel(
            f"self.matches('{_cel_literal(NETWORK_NAME)}')", NETWORK_NAME_MESSAGE
        ),
    ),
    AfterValidator(_check_network),
]
"""A host network (libvirt network or bridge) by name."""


SingleLine = Annotated[
    str,
    Field(json_schema_extra=cel(f"!self.matches('{_CONTROL_CEL}')", CONTROL_MESSAGE)),
    AfterValidator(_check_single_line),
]
"""One line of free text that reaches the domain XML (a kernel command line); the field gives
its own length limit."""
