"""VMImage: what the schema refuses (each with a message that says what to do) and the import
state machine every host's report goes through."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from kubenova.api.image import (
    ImagePhase,
    ImportEvent,
    ImportReport,
    VMImage,
    VMImageStatus,
    observe,
)
from kubenova.api.meta import InvalidObjectError

pytestmark = pytest.mark.unit

SHA = "a" * 64
NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def image(**spec: Any) -> VMImage:
    return VMImage.parse({"metadata": {"name": "debian-12"}, "spec": spec})


def test_a_disk_image_names_its_url_checksum_and_format() -> None:
    img = image(url="https://images.example/debian-12.raw", sha256=SHA, format="raw")
    assert img.spec.files()["disk"].url == "https://images.example/debian-12.raw"
    assert img.spec.checksum == SHA
    assert not img.spec.is_kernel


def test_a_kernel_pair_names_both_files() -> None:
    img = image(
        kernel={
            "kernel": {"url": "http://127.0.0.1:8080/vmlinuz", "sha256": SHA},
            "initrd": {"url": "http://127.0.0.1:8080/initrd", "sha256": "b" * 64},
        }
    )
    assert sorted(img.spec.files()) == ["initrd", "vmlinuz"]
    assert img.spec.is_kernel
    other = image(
        kernel={
            "kernel": {"url": "http://127.0.0.1:8080/vmlinuz", "sha256": SHA},
            "initrd": {"url": "http://127.0.0.1:8080/initrd", "sha256": "c" * 64},
        }
    )
    assert len(img.spec.checksum) == 64
    assert other.spec.checksum != img.spec.checksum, "another initrd is another image"


@pytest.mark.parametrize(
    ("spec", "field", "says"),
    [
        ({"url": "ftp://x.example/a.qcow2", "sha256": SHA}, "spec.url", "scheme 'ftp'"),
        ({"url": "file:///etc/shadow", "sha256": SHA}, "spec.url", "scheme 'file'"),
        ({"url": "https:///no-host", "sha256": SHA}, "spec.url", "http:// or https:// URL"),
        ({"url": "https://x.example/a b", "sha256": SHA}, "spec.url", "no spaces"),
        ({"url": "https://x.example/a", "sha256": "ABC"}, "spec.sha256", "64 lower-case hex"),
        ({"url": "https://x.example/a"}, "spec", "sha256 is required with url"),
        ({"sha256": SHA}, "spec", "set exactly one of url"),
        ({"url": "https://x.example/a", "sha256": SHA, "format": "vmdk"}, "spec.format", "qcow2"),
    ],
)
def test_bad_specs_are_refused_naming_the_field(
    spec: dict[str, Any], field: str, says: str
) -> None:
    with pytest.raises(InvalidObjectError) as e:
        image(**spec)
    assert any(p.startswith(f"{field}:") and says in p for p in e.value.problems), e.value.problems


def _at(phase: ImagePhase, **kw: Any) -> VMImageStatus:
    return VMImageStatus(phase=phase, **kw)


def test_an_import_goes_pending_importing_ready() -> None:
    s = observe(VMImageStatus(), ImportReport(ImportEvent.STARTED, "h1"), 1, NOW)
    assert (s.phase, s.reason) == (ImagePhase.IMPORTING, "Importing")
    done = ImportReport(ImportEvent.SUCCEEDED, "h1", size=123, sha256=SHA)
    s = observe(s, done, 1, NOW)
    assert (s.phase, s.size, s.sha256, s.message) == (
        ImagePhase.READY, 123, SHA, "verified on host h1",
    )  # fmt: skip
    assert [(c.type, c.status) for c in s.conditions] == [("Ready", "True")]
    assert s.hosts == [], "the operator's, from the Hosts"
    again = observe(s, ImportReport(ImportEvent.SUCCEEDED, "h0", size=123, sha256=SHA), 1, NOW)
    assert again is s


def test_a_failure_carries_its_reason_and_a_retry_goes_back_to_importing() -> None:
    bad = ImportReport(
        ImportEvent.FAILED, "h1", "ChecksumMismatch", "checksum mismatch: expected a, got b"
    )
    s = observe(_at(ImagePhase.IMPORTING), bad, 1, NOW)
    assert (s.phase, s.reason) == (ImagePhase.FAILED, "ChecksumMismatch")
    assert s.message == "host h1: checksum mismatch: expected a, got b"
    assert [(c.type, c.status, c.reason) for c in s.conditions] == [
        ("Ready", "False", "ChecksumMismatch")
    ]
    again = observe(s, ImportReport(ImportEvent.STARTED, "h1"), 1, NOW)
    assert again.phase is ImagePhase.IMPORTING


def test_ready_stays_ready_when_another_host_starts_or_fails() -> None:
    ready = observe(
        VMImageStatus(), ImportReport(ImportEvent.SUCCEEDED, "h1", size=1, sha256=SHA), 1, NOW
    )
    for report in (
        ImportReport(ImportEvent.STARTED, "h2"),
        ImportReport(ImportEvent.FAILED, "h2", "Unreachable", "no route"),
    ):
        assert observe(ready, report, 1, NOW) is ready


def test_a_report_that_changes_nothing_returns_the_same_status() -> None:
    s = observe(VMImageStatus(), ImportReport(ImportEvent.STARTED, "h1"), 1, NOW)
    assert observe(s, ImportReport(ImportEvent.STARTED, "h1"), 1, NOW) is s
