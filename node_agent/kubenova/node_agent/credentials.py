"""SSH public keys from `spec.accessCredentials` Secrets, checked and merged into the VM's
cloud-init user data. Pure: the caller reads the Secrets; nothing here does I/O.

A Secret is the tenant's, but it may hold anything (a private key pasted by mistake, another
application's password): only lines that are SSH public keys reach the guest, anything else is
refused with the Secret, key and line named and the content never repeated. The keys are
added to the user's own user data so that nothing a Secret holds can change its meaning:

- no user data: a `#cloud-config` with `ssh_authorized_keys`;
- `#cloud-config`: parsed as YAML, the keys appended to its `ssh_authorized_keys` (the user's
  keys first, duplicates dropped), and written back with a YAML emitter (comments are lost);
- anything else cloud-init reads (a `#!` script, `#include`, `#cloud-boothook`, a jinja
  template, a MIME multipart message): a MIME multipart message of the user's part(s) and a
  `text/cloud-config` part with the keys whose Merge-Type appends to the lists of the user's
  cloud-config parts;
- gzip-compressed user data is refused (kubenova would have to inflate it to add a part).

`instance_id` changes with the key set: cloud-init applies `ssh_authorized_keys` once per
instance, so a new set of keys is a new instance at the next boot.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email import message_from_string
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import yaml

KEY_TYPES = frozenset(
    {
        "ssh-ed25519",
        "ssh-rsa",
        "ssh-dss",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
        "ssh-ed25519-cert-v01@openssh.com",
        "ssh-rsa-cert-v01@openssh.com",
        "ssh-dss-cert-v01@openssh.com",
        "ecdsa-sha2-nistp256-cert-v01@openssh.com",
        "ecdsa-sha2-nistp384-cert-v01@openssh.com",
        "ecdsa-sha2-nistp521-cert-v01@openssh.com",
        "sk-ssh-ed25519-cert-v01@openssh.com",
        "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com",
    }
)
"""The key types OpenSSH's sshd accepts in authorized_keys."""
MAX_LINE = 8192
"""Characters in one authorized_keys line (a 16384-bit RSA key is about 2,800)."""
MAX_KEYS = 64
"""Keys one VM may get, over all its Secrets."""
MERGE_TYPE = "list(append)+dict(recurse_array)+str()"
"""cloud-init's merger for the keys' part: append to the user's lists, keep the user's values."""
FORMAT = "'[options] <type> <base64> [comment]', e.g. 'ssh-ed25519 AAAAC3Nz... user@laptop'"

_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f\ufffe\uffff\ud800-\udfff]")
_BASE64 = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")
_GZIP = b"\x1f\x8b"
_CLOUD_CONFIG = "#cloud-config"
_ARCHIVE = "#cloud-config-archive"
_MIME_START = re.compile(r"^(content-type|mime-version)\s*:", re.IGNORECASE)


class CredentialError(ValueError):
    """An access credential cannot be used; the message names the Secret, key and line and
    what to do, never the content."""


@dataclass(frozen=True)
class Source:
    """Where a key set came from, for messages: the VM field and the Secret."""

    field: str
    """e.g. 'spec.accessCredentials[0]'."""
    secret: str


def _blob_type(blob: str) -> str | None:
    """The key type a public key blob declares (its first SSH string), or None."""
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) < 4:
        return None
    n = int.from_bytes(raw[:4], "big")
    if n > 64 or len(raw) < 4 + n:
        return None
    try:
        return raw[4 : 4 + n].decode("ascii")
    except UnicodeDecodeError:
        return None


def _hint(line: str) -> str:
    if "PRIVATE KEY" in line:
        return "; it looks like a private key: put the public key (the .pub file) in the Secret"
    if line.startswith("---- BEGIN SSH2 PUBLIC KEY"):
        return "; it is an RFC 4716 key: convert it with `ssh-keygen -i -f key.pub`"
    return ""


def check_line(line: str) -> str | None:
    """Why `line` is not an authorized_keys line, or None when it is one."""
    if len(line) > MAX_LINE:
        return f"is {len(line)} characters long, more than {MAX_LINE}"
    bad = _CONTROL.search(line)
    if bad:
        return f"contains the control character U+{ord(bad.group()):04X}"
    tokens = line.split()
    for i, token in enumerate(tokens[:-1]):
        if token not in KEY_TYPES:
            continue
        blob = tokens[i + 1]
        if not _BASE64.fullmatch(blob):
            return f"has key type {token} but its data is not base64"
        declared = _blob_type(blob)
        if declared != token:
            return f"has key type {token} but its data is not a {token} public key (cut short?)"
        return None
    return f"is not an SSH public key (expected {FORMAT}){_hint(line)}"


def parse_keys(source: Source, data: dict[str, bytes]) -> list[str]:
    """The authorized_keys lines of a Secret, every key of its data in name order; blank lines
    and `#` comments are skipped. An empty Secret gives no keys (how all keys are revoked)."""
    keys: list[str] = []
    for name in sorted(data):
        where = f"{source.field}: Secret {source.secret!r} key {name!r}"
        try:
            text = data[name].decode("utf-8")
        except UnicodeDecodeError:
            raise CredentialError(
                f"{where} is not UTF-8 text; put SSH public keys in it, one per line"
            ) from None
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            why = check_line(line)
            if why is not None:
                raise CredentialError(f"{where} line {number} {why}")
            keys.append(line)
    return keys


def collect(key_sets: Iterable[Sequence[str]]) -> tuple[str, ...]:
    """The keys of all Secrets in order, each once, at most `MAX_KEYS`."""
    seen: dict[str, None] = {}
    for keys in key_sets:
        seen.update(dict.fromkeys(keys))
    if len(seen) > MAX_KEYS:
        raise CredentialError(
            f"spec.accessCredentials: the Secrets hold {len(seen)} SSH public keys, more than "
            f"{MAX_KEYS}; remove some"
        )
    return tuple(seen)


def instance_id(base: str, keys: Sequence[str]) -> str:
    """cloud-init's instance-id: `base` (the VM's uid) without keys; with keys, a digest of
    them is appended, so a new key set makes cloud-init apply it at the next boot."""
    if not keys:
        return base
    digest = hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:16]
    return f"{base}-{digest}"


def _dump(doc: object) -> str:
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    text: str = yaml.dump(
        doc, Dumper=dumper, sort_keys=False, allow_unicode=True, width=1 << 16,
        default_flow_style=False,
    )  # fmt: skip
    return text


def _keys_only(keys: Sequence[str]) -> str:
    return f"{_CLOUD_CONFIG}\n{_dump({'ssh_authorized_keys': list(keys)})}"


def _merge_cloud_config(text: str, keys: Sequence[str]) -> str:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        doc = yaml.load(text, Loader=loader)  # a safe loader, the C one when built
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise CredentialError(
            f"the user data starts with {_CLOUD_CONFIG} but is not valid YAML{at}; fix it, "
            "or kubenova cannot add spec.accessCredentials to it"
        ) from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise CredentialError(
            f"the user data starts with {_CLOUD_CONFIG} but is a YAML {type(doc).__name__}, "
            "not a mapping; cloud-init reads a mapping of modules"
        )
    own = doc.get("ssh_authorized_keys")
    if own is None:
        own = []
    if not isinstance(own, list) or not all(isinstance(k, str) for k in own):
        raise CredentialError(
            "the user data's ssh_authorized_keys is not a list of strings; make it one, so the "
            "keys of spec.accessCredentials can be added to it"
        )
    doc["ssh_authorized_keys"] = list(dict.fromkeys([*own, *keys]))
    return f"{_CLOUD_CONFIG}\n{_dump(doc)}"


def _keys_part(keys: Sequence[str]) -> MIMEText:
    part = MIMEText(_keys_only(keys), "cloud-config", "utf-8")
    part["Merge-Type"] = MERGE_TYPE
    part.add_header("Content-Disposition", "attachment", filename="kubenova-ssh-keys.cfg")
    return part


def _multipart(text: str, keys: Sequence[str]) -> str:
    if _MIME_START.match(text):
        user = message_from_string(text)
        if user.is_multipart():
            user.attach(_keys_part(keys))  # the user's own boundary stays
            return user.as_string()
        parts: list[Message] = [user]
    else:
        # text/plain: cloud-init finds the part's type from its first line, as it would have
        # for the user data alone (#!, #include, #cloud-boothook, ## template: jinja).
        parts = [MIMEText(text, "plain", "utf-8")]
    outer = MIMEMultipart("mixed")
    for part in [*parts, _keys_part(keys)]:
        outer.attach(part)
    # A boundary from the content, not from a random source: the same inputs give the same
    # seed, so an unchanged VM's seed is not rebuilt at every start. The parts are base64,
    # which holds no '='-run inside a line, so the boundary cannot occur in them.
    digest = hashlib.sha256("\n".join([text, *keys]).encode()).hexdigest()[:32]
    outer.set_boundary(f"==kubenova-{digest}==")
    return outer.as_string()


def merge(user_data: str | bytes | None, keys: Sequence[str]) -> str | bytes | None:
    """The user data with `keys` added (unchanged when there are none)."""
    if not keys:
        return user_data
    raw = user_data.encode() if isinstance(user_data, str) else (user_data or b"")
    if raw.startswith(_GZIP):
        raise CredentialError(
            "the user data is gzip-compressed, and kubenova cannot add spec.accessCredentials "
            "to it; give it uncompressed"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CredentialError(
            "the user data is not UTF-8 text, and kubenova cannot add spec.accessCredentials "
            "to it; give cloud-init text"
        ) from None
    if not text.strip():
        return _keys_only(keys)
    if text.startswith(_CLOUD_CONFIG) and not text.startswith(_ARCHIVE):
        return _merge_cloud_config(text, keys)
    return _multipart(text, keys)
