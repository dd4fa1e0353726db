"""Which hosts hold which VMImage, from the Hosts' `status.images`: an index kept current by
Host events with work proportional to what changed (a host's report that lists the same images
touches nothing). Pure.

A host counts as holding an image only with the checksum the VMImage's spec names: a copy of
an older image of the same name (deleted and made anew) is not this one.
"""

from __future__ import annotations

from collections.abc import Mapping


class ImageHolders:
    def __init__(self) -> None:
        self._by_host: dict[str, dict[str, str]] = {}
        """host → {image name: sha256} as its last report said."""
        self._by_image: dict[str, dict[str, str]] = {}
        """image name → {host: sha256}."""

    def update_host(self, host: str, images: Mapping[str, str]) -> set[str]:
        """Record what `host` reports it holds ({name: sha256}); the image names whose holders
        changed."""
        old = self._by_host.get(host, {})
        changed = {n for n in old.keys() | images.keys() if old.get(n) != images.get(n)}
        for name in changed:
            holders = self._by_image.setdefault(name, {})
            if name in images:
                holders[host] = images[name]
            else:
                holders.pop(host, None)
                if not holders:
                    del self._by_image[name]
        if images:
            self._by_host[host] = dict(images)
        else:
            self._by_host.pop(host, None)
        return changed

    def remove_host(self, host: str) -> set[str]:
        """The host is gone: the images it held."""
        return self.update_host(host, {})

    def holders(self, name: str, sha256: str) -> list[str]:
        """Hosts holding image `name` with checksum `sha256`, sorted."""
        return sorted(h for h, s in self._by_image.get(name, {}).items() if s == sha256)
