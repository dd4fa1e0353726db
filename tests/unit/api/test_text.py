"""The names and text a tenant writes that reach a host (`kubenova.api.text`): the pydantic
check and the CRD's CEL rule come from one definition and agree."""

from __future__ import annotations

import pytest

from kubenova.api.crdgen import crd
from kubenova.api.meta import InvalidObjectError
from kubenova.api.vm import VirtualMachine

pytestmark = pytest.mark.unit


def _vm(image: str) -> dict[str, object]:
    return {
        "kind": "VirtualMachine",
        "metadata": {"name": "t", "namespace": "n"},
        "spec": {"flavor": "small", "boot": {"image": image}},
    }


@pytest.mark.parametrize("image", ["debian-12.qcow2", "a", "ubuntu-24.04.1.qcow2"])
def test_plain_names_are_accepted(image: str) -> None:
    assert VirtualMachine.parse(_vm(image)).spec.boot.image == image


@pytest.mark.parametrize(
    "image",
    ["../x.qcow2", "/etc/shadow", "a/b", "..", ".", ".hidden", "a..b", "Debian.qcow2", "x\n", "x."],
)
def test_anything_else_is_refused_saying_what_a_plain_name_is(image: str) -> None:
    with pytest.raises(InvalidObjectError, match=r"spec.boot.image: .*must be a plain name"):
        VirtualMachine.parse(_vm(image))


def test_the_crd_carries_the_same_rules_with_the_same_messages() -> None:
    schema = crd(VirtualMachine)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    boot = schema["properties"]["spec"]["properties"]["boot"]["properties"]
    (image_rule,) = boot["image"]["x-kubernetes-validations"]
    assert image_rule["message"].startswith("must be a plain name, not a path")
    # CEL has no '\.' escape: the regular expression's backslashes are doubled for CEL.
    assert "(\\\\.[a-z0-9]" in image_rule["rule"]
    (cmdline_rule,) = boot["kernel"]["properties"]["cmdline"]["x-kubernetes-validations"]
    assert cmdline_rule["rule"].startswith("!self.matches(")
    assert cmdline_rule["message"].startswith("must not contain control characters")
