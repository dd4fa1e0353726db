"""SSH public keys of `spec.accessCredentials`: every line checked, merged into any user data
cloud-init reads without changing what the user wrote, and no Secret content can break the
seed's user data (property tests)."""

from __future__ import annotations

import base64
import email

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from kubenova.node_agent import credentials as c
from kubenova.node_agent.credentials import CredentialError, Source

pytestmark = pytest.mark.unit

ED = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINWEROBVbsZOIean92K5eq+GnJyisZjuf/IRHexdo+jA a@laptop"
ED2 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFrSc72GyCN6n/Ppr9kBKVr0JtE1FyGzMWDWK1AvEzSZ b@laptop"
SRC = Source("VM ns/web: spec.accessCredentials[0]", "keys")


def _keys(**data: str) -> list[str]:
    return c.parse_keys(SRC, {k: v.encode() for k, v in data.items()})


def _parts(text: str | bytes | None) -> list[tuple[str, bytes]]:
    """The (content type, decoded payload) of each leaf part of a MIME message."""
    msg = email.message_from_string(str(text))
    found = []
    for part in msg.walk():
        if not part.is_multipart():
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            found.append((part.get_content_type(), payload))
    return found


def _blob(key_type: str, payload: bytes = b"\0" * 32) -> str:
    raw = len(key_type).to_bytes(4, "big") + key_type.encode() + payload
    return base64.b64encode(raw).decode()


def test_keys_comments_blank_lines_and_options_are_read_in_key_order() -> None:
    opts = f'from="10.0.0.0/8",command="echo hi there" {ED2}'
    got = _keys(b=f"# ops\n\n{opts}\r\n", a=f"  {ED}  \n")
    assert got == [ED, opts]


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("hello world", "is not an SSH public key (expected '[options] <type>"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----", "it looks like a private key"),
        ("---- BEGIN SSH2 PUBLIC KEY ----", "ssh-keygen -i -f key.pub"),
        ("ssh-ed25519 not*base64 x", "has key type ssh-ed25519 but its data is not base64"),
        (f"ssh-rsa {_blob('ssh-ed25519')}", "its data is not a ssh-rsa public key (cut short?)"),
        ("ssh-ed25519 AAAA", "its data is not a ssh-ed25519 public key"),
        (f"{ED}\x1b[2J", "contains the control character U+001B"),
        ("ssh-ed25519 " + "A" * 9000, "more than 8192"),
    ],
)
def test_a_line_that_is_not_a_public_key_is_named_without_its_content(line: str, says: str) -> None:
    with pytest.raises(CredentialError) as e:
        _keys(id=f"# first\n{line}\n")
    message = str(e.value)
    assert message.startswith("VM ns/web: spec.accessCredentials[0]: Secret 'keys' key 'id' line 2")
    assert says in message
    assert line not in message, "the Secret's content is never repeated"


def test_not_utf8_is_refused() -> None:
    with pytest.raises(CredentialError, match="key 'k' is not UTF-8 text"):
        c.parse_keys(SRC, {"k": b"\xff\xfe"})


def test_an_empty_secret_gives_no_keys() -> None:
    assert c.parse_keys(SRC, {}) == []
    assert _keys(k="\n# all revoked\n") == []


def test_keys_over_all_secrets_are_deduplicated_and_bounded() -> None:
    assert c.collect([[ED, ED2], [ED]]) == (ED, ED2)
    many = [f"ssh-ed25519 {_blob('ssh-ed25519', bytes([i]) * 32)}" for i in range(c.MAX_KEYS + 1)]
    with pytest.raises(CredentialError, match="65 SSH public keys, more than 64"):
        c.collect([many])


def test_instance_id_changes_with_the_key_set_only() -> None:
    assert c.instance_id("uid", ()) == "uid"
    a = c.instance_id("uid", (ED, ED2))
    assert a == c.instance_id("uid", (ED2, ED)), "order does not make a new instance"
    assert a != c.instance_id("uid", (ED,))
    assert a.startswith("uid-")


def test_no_keys_leaves_the_user_data_alone() -> None:
    assert c.merge("#!/bin/sh\n", ()) == "#!/bin/sh\n"
    assert c.merge(None, ()) is None


def test_keys_alone_make_a_cloud_config() -> None:
    out = c.merge(None, [ED])
    assert isinstance(out, str) and out.startswith("#cloud-config\n")
    assert yaml.safe_load(out) == {"ssh_authorized_keys": [ED]}
    assert yaml.safe_load(str(c.merge("  \n", [ED]))) == {"ssh_authorized_keys": [ED]}


def test_a_cloud_config_keeps_its_keys_and_everything_else() -> None:
    user = f"#cloud-config\nhostname: web\nssh_authorized_keys: [{ED2}]\nruncmd:\n - [ls, /]\n"
    out = str(c.merge(user.encode(), [ED, ED2]))
    assert out.startswith("#cloud-config\n")
    assert yaml.safe_load(out) == {
        "hostname": "web",
        "ssh_authorized_keys": [ED2, ED],
        "runcmd": [["ls", "/"]],
    }


@pytest.mark.parametrize(
    ("user", "says"),
    [
        ("#cloud-config\nkey: [unclosed\n", "not valid YAML at line 3"),
        ("#cloud-config\n- a\n- b\n", "is a YAML list, not a mapping"),
        ("#cloud-config\nssh_authorized_keys: one-string\n", "is not a list of strings"),
    ],
)
def test_a_cloud_config_kubenova_cannot_merge_into_is_refused(user: str, says: str) -> None:
    with pytest.raises(CredentialError, match=says):
        c.merge(user, [ED])


def test_a_script_becomes_a_multipart_message_with_a_keys_part() -> None:
    script = "#!/bin/sh\necho hi\n"
    out = str(c.merge(script, [ED]))
    assert out == c.merge(script, [ED]), "the same inputs make the same seed"
    parts = _parts(out)
    assert [kind for kind, _ in parts] == ["text/plain", "text/cloud-config"]
    assert parts[0][1].decode() == script
    assert yaml.safe_load(parts[1][1]) == {"ssh_authorized_keys": [ED]}
    msg = email.message_from_string(out)
    leaves = [p for p in msg.walk() if not p.is_multipart()]
    assert leaves[1]["Merge-Type"] == c.MERGE_TYPE


def test_a_cloud_config_archive_is_not_parsed_as_a_cloud_config() -> None:
    archive = "#cloud-config-archive\n- type: text/x-shellscript\n  content: echo\n"
    assert _parts(c.merge(archive, [ED]))[0] == ("text/plain", archive.encode())


def test_a_multipart_user_data_gets_one_more_part() -> None:
    user = (
        'Content-Type: multipart/mixed; boundary="XX"\nMIME-Version: 1.0\n\n--XX\n'
        "Content-Type: text/x-shellscript\n\necho one\n--XX--\n"
    )
    msg = email.message_from_string(str(c.merge(user, [ED])))
    assert msg.get_boundary() == "XX"
    kinds = [p.get_content_type() for p in msg.walk() if not p.is_multipart()]
    assert kinds == ["text/x-shellscript", "text/cloud-config"]


def test_gzip_and_binary_user_data_are_refused() -> None:
    with pytest.raises(CredentialError, match="gzip-compressed"):
        c.merge(b"\x1f\x8b\x08\x00", [ED])
    with pytest.raises(CredentialError, match="not UTF-8 text"):
        c.merge(b"\xff\xfe", [ED])


_text = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=200)


@given(line=_text)
def test_any_secret_line_is_refused_or_becomes_exactly_one_yaml_list_item(line: str) -> None:
    """Whatever a Secret holds, the seed's user data parses and holds exactly the lines that
    passed the check, each whole; nothing else."""
    for text in (line, f"{ED} {line}", f"{line} {ED}"):
        try:
            keys = _keys(k=text)
        except CredentialError:
            continue
        out = str(c.merge("#cloud-config\nhostname: web\n", keys))
        added = {"ssh_authorized_keys": keys} if keys else {}
        assert yaml.safe_load(out) == {"hostname": "web", **added}
        for key in keys:
            assert c.check_line(key) is None
            assert "\n" not in key and "\r" not in key


@given(user=_text)
def test_any_text_user_data_keeps_its_content_next_to_the_keys(user: str) -> None:
    try:
        out = c.merge(user, [ED])
    except CredentialError:
        return  # a #cloud-config kubenova could not read: refused, never mangled
    text = str(out)
    if (
        user.strip()
        and user.startswith("#cloud-config")
        and not user.startswith("#cloud-config-archive")
    ):
        doc = yaml.safe_load(text)
        assert ED in doc["ssh_authorized_keys"]
    elif user.strip():
        payloads = [payload for _, payload in _parts(text)]
        assert yaml.safe_load(payloads[-1]) == {"ssh_authorized_keys": [ED]}
        if not c._MIME_START.match(user):
            assert payloads[0].decode() == user
