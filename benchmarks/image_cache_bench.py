"""Benchmark of the agent's image cache against a loopback HTTP server, with a baseline
measured in the same run.

    python benchmarks/image_cache_bench.py              # a 256 MiB image
    python benchmarks/image_cache_bench.py --mib 1024

  1. baseline: the same file read over HTTP with urllib, hashed (sha256) and written to disk
     in 1 MiB chunks, in one thread: what any download costs;
  2. cache: `ImageCache.ensure()` of a VMImage with that file (aiohttp stream, sha256, write,
     fsync, rename, qemu-img info), the way the agent fetches an image; then 20 concurrent
     `ensure()` of a second image, counting the server's GETs.

Both ends share this machine's cores. Not a pytest test.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from kubenova.api.image import VMImage
from kubenova.node_agent.imagecache import ImageCache

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the test fixtures' image server is the harness

from tests.fixtures.imageserver import ImageServer  # noqa: E402


def _qcow2(folder: Path, mib: int) -> bytes:
    """A qcow2 holding `mib` MiB of incompressible data."""
    raw = folder / "data.raw"
    with raw.open("wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))
    out = folder / "data.qcow2"
    subprocess.run(
        ["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(out)], check=True
    )
    return out.read_bytes()


def _baseline(url: str, dest: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    digest = hashlib.sha256()
    with urllib.request.urlopen(url) as resp, dest.open("wb") as out:
        while chunk := resp.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
    return time.perf_counter() - t0, digest.hexdigest()


def _image(name: str, url: str, sha: str) -> VMImage:
    return VMImage.parse(
        {"metadata": {"name": name, "uid": name}, "spec": {"url": url, "sha256": sha}}
    )


async def _storm(cache: ImageCache, image: VMImage, n: int) -> float:
    t0 = time.perf_counter()
    await asyncio.gather(*(cache.ensure(image) for _ in range(n)))
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = _qcow2(folder, args.mib)
        server = ImageServer()
        server.thread.start()
        url, sha = server.add("/a.qcow2", data)
        url2, sha2 = server.add("/b.qcow2", data)
        mb = len(data) / 1e6
        base_s, base_sha = _baseline(url, folder / "baseline")
        assert base_sha == sha
        cache = ImageCache(str(folder / "store"), "bench")
        cache.load()
        t0 = time.perf_counter()
        asyncio.run(cache.ensure(_image("a", url, sha)))
        cache_s = time.perf_counter() - t0
        storm_s = asyncio.run(_storm(cache, _image("b", url2, sha2), 20))
        server.httpd.shutdown()
        print(f"image: {mb:.0f} MB (qcow2 of {args.mib} MiB random data)")
        print(f"baseline urllib + sha256 + write: {base_s:.2f} s  {mb / base_s:.0f} MB/s")
        print(f"ImageCache.ensure (first fetch):  {cache_s:.2f} s  {mb / cache_s:.0f} MB/s")
        gets = len(server.gets("/b.qcow2"))
        print(f"20 concurrent ensure() of another image: {storm_s:.2f} s, {gets} GET(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
