"""Inputs that would break the domain XML (issue 13, item 6, the XML part): NUL and other
control characters in any string that reaches the XML are refused by the API server or the
webhook, naming the field, and no VM is created. (The builder's own refusal, and that for any
accepted input its XML parses, are unit and property tests: tests/unit/node_agent.)"""

from __future__ import annotations

import pytest

from kubenova.api import constants
from tests.e2e.bind import vm
from tests.fixtures.cluster import LocalCluster
from tests.security import hostkit
from tests.security.hostkit import flavor

__all__ = ["flavor"]  # a fixture used by name

pytestmark = pytest.mark.apiserver


@pytest.mark.parametrize("bad", ["\x00", "\x1b[2J", "\x07", "\ufffe", "\n"])
def test_a_kernel_command_line_with_control_characters_is_refused(
    test_cluster: LocalCluster, wh_namespace: str, flavor: str, bad: str
) -> None:
    boot = {"kernel": {"name": "tiny", "cmdline": f"console=ttyS0 {bad}init=/bin/sh"}}
    code, err = hostkit.apply(test_cluster, hostkit.vm_doc("nul", wh_namespace, flavor, boot=boot))
    assert code != 0, f"a command line with {bad!r} was admitted"
    assert "spec.boot.kernel.cmdline" in err and "must not contain control characters" in err, err
    assert vm(test_cluster, wh_namespace, "nul") is None


@pytest.mark.parametrize(
    "key", [constants.ANNOTATION_TRACE_ID, constants.ANNOTATION_RESTART_REQUESTED]
)
def test_annotations_the_domain_xml_carries_are_refused_with_control_characters(
    test_cluster: LocalCluster, wh_namespace: str, flavor: str, key: str
) -> None:
    doc = hostkit.vm_doc("nul", wh_namespace, flavor)
    doc["metadata"]["annotations"] = {key: "abc\x00def"}
    code, err = hostkit.apply(test_cluster, doc)
    assert code != 0, f"{key} with a NUL was admitted"
    assert f"metadata.annotations[{key}]: contains the control character U+0000" in err, err
    assert vm(test_cluster, wh_namespace, "nul") is None


def test_a_restart_request_with_control_characters_is_refused_on_update(
    test_cluster: LocalCluster, wh_namespace: str, flavor: str
) -> None:
    code, err = hostkit.apply(test_cluster, hostkit.vm_doc("reboot", wh_namespace, flavor))
    assert code == 0, err
    before = vm(test_cluster, wh_namespace, "reboot")
    assert before is not None
    proc = test_cluster.kubectl(
        "annotate", "vm", "reboot", "-n", wh_namespace,
        f"{constants.ANNOTATION_RESTART_REQUESTED}=now\x1b]0;owned\x07", check=False,
    )  # fmt: skip
    assert proc.returncode != 0, "a restart request with control characters was admitted"
    assert "contains the control character U+001B" in proc.stderr, proc.stderr
    after = vm(test_cluster, wh_namespace, "reboot")
    assert after is not None
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
