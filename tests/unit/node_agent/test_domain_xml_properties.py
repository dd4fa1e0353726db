"""Properties of the domain XML builder over hostile text (issue 13, item 6): for any VM the
schema and the webhook rules accept, the XML parses and carries the user's text unchanged; for
any text at all, `build()` either refuses it naming where it came from or writes XML that
parses, never ill-formed XML."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from kubenova.api import constants
from kubenova.api.meta import InvalidObjectError
from kubenova.api.quantity import Quantity
from kubenova.api.text import NETWORK_NAME, PLAIN_NAME
from kubenova.api.vm import VirtualMachine, VMResources
from kubenova.node_agent import domain_xml
from kubenova.node_agent.domain_xml import DomainSettings
from kubenova.node_agent.hypervisor import Owner
from kubenova.webhooks import rules
from tests.unit.node_agent.builders import UID
from tests.unit.webhooks.builders import make_pool

pytestmark = pytest.mark.unit

SIZE = VMResources(vcpus=1, memory=Quantity("1Gi"), disk=Quantity("1Gi"))
SETTINGS = DomainSettings(domain_type="test", state_dir="/srv/d", image_dir="/srv/images")
OWNER_NS = f"{{{domain_xml.OWNER_NS}}}"

# Every code point, surrogates and control characters included: what a JSON body can carry.
anything = st.text(alphabet=st.characters(exclude_categories=()), max_size=40)
# Text the schema accepts, mostly, so most examples are accepted VMs (the refused ones are the
# second property's business).
printable = st.text(alphabet=st.characters(exclude_categories=("Cc", "Cs", "Cn")), max_size=40)
text = st.one_of(printable, printable, printable, anything)
# Without the anchors: Python's '$' also matches before a final newline.
plain = st.from_regex(PLAIN_NAME[1:-1], fullmatch=True).filter(lambda s: len(s) < 200)
names = st.one_of(plain, plain, plain, anything)
network_name = st.from_regex(NETWORK_NAME[1:-1], fullmatch=True).filter(lambda s: len(s) < 60)
networks = st.one_of(network_name, network_name, network_name, anything)


def _accepted(raw: dict[str, Any]) -> VirtualMachine:
    """The VM as the API server and the webhook would admit it, or the example is discarded."""
    try:
        vm = VirtualMachine.parse(raw)
    except InvalidObjectError:
        assume(False)
        raise
    pool = make_pool("p", networks=[n.network for n in vm.spec.networks])
    assume(rules.host_inputs(vm, pool) == [])
    return vm


# Most random names and texts are refused by the admission rules (that is `_accepted`'s
# `assume`), so whether enough inputs pass depends on the seed: Hypothesis' `filter_too_much`
# check then fails a correct test, as its timing checks would (tests/conftest.py).
@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(
    kernel=st.booleans(),
    name=names,
    cmdline=text,
    trace_id=text,
    restart=text,
    network=networks,
)
def test_for_any_accepted_vm_the_domain_xml_parses_and_keeps_the_text(
    kernel: bool, name: str, cmdline: str, trace_id: str, restart: str, network: str
) -> None:
    boot: dict[str, Any] = (
        {"kernel": {"name": name, "cmdline": cmdline}} if kernel else {"image": name}
    )
    vm = _accepted({
        "kind": "VirtualMachine",
        "metadata": {"name": "vm", "namespace": "ns", "uid": UID, "annotations": {
            constants.ANNOTATION_TRACE_ID: trace_id,
            constants.ANNOTATION_RESTART_REQUESTED: restart,
        }},
        "spec": {"flavor": "f", "boot": boot, "networks": [{"name": "eth0", "network": network}]},
    })  # fmt: skip
    spec, files = domain_xml.plan(vm, SIZE, SETTINGS)
    root = ET.fromstring(domain_xml.build(spec))
    if kernel:
        assert root.findtext("os/cmdline") == cmdline
    assert root.findtext(f"metadata/{OWNER_NS}vm/{OWNER_NS}traceId") == (trace_id or None)
    assert root.find("devices/interface/source").get("network") == network  # type: ignore[union-attr]
    for f in files.boot_files:
        assert f.path.startswith(f"{SETTINGS.image_dir}/"), "a plain name stays in the store"
        assert "/../" not in f"{f.path}/"
    ET.fromstring(domain_xml.restart_element(restart))


@given(
    name=anything,
    cmdline=anything,
    kernel=anything,
    trace_id=anything,
    owner=anything,
    network=anything,
    mac=anything,
)
def test_for_any_text_the_builder_refuses_or_writes_xml_that_parses(
    name: str, cmdline: str, kernel: str, trace_id: str, owner: str, network: str, mac: str
) -> None:
    spec = domain_xml.DomainSpec(
        name=name,
        uuid=UID,
        domain_type="test",
        vcpus=1,
        memory_kib=1024,
        owner=Owner(namespace=owner, name=owner, uid=UID),
        kernel=domain_xml.KernelBoot(kernel, kernel, cmdline),
        nics=(domain_xml.Nic(network, "virtio", mac),),
        trace_id=trace_id,
    )
    try:
        xml = domain_xml.build(spec)
    except domain_xml.DomainXMLError as e:
        assert "which the domain XML cannot carry; remove it" in str(e)
        return
    root = ET.fromstring(xml)
    assert root.findtext("os/cmdline") == cmdline
    assert root.findtext("name") == name
