"""The sweep explorer's responsiveness on a 200-cell sweep of 1024 x 1024 images.

A real sweep (steps 1-20 x guidance 1-10, 200 cells) on the embedded server's ``null`` engine
(it echoes a 1024 x 1024 photo-like input), then ``Sweep.load(folder).explore()`` stepped
along the steps axis as an arrow key does. For each step it measures

* the bytes the widgets send to the browser (every comm message's JSON plus its binary
  buffers, counted at ``ipywidgets.Widget._send``), and
* the time from the slider's value change to the swipe's images being set (the observer
  callback, run synchronously in the kernel), first visit (decode, downscale, encode) and
  a second pass over the same cells (display-size pictures cached).

    python benchmarks/bench_explorer.py [--size 1024] [--width 512] [--steps 20] [--guidance 10]
                                        [--folder RUN_FOLDER_OF_AN_EARLIER_RUN]

The time is split into the explorer's own part (finding the cell, its cached display-size
pictures, the text) and ``SwipeView.set_images`` (which re-encodes the pair it is given).

Not part of the test suite: it prints measured numbers and asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _photo(size: int) -> tuple[Any, Any]:
    """A photo-like input (gradients plus noise: PNG compresses it as badly as a photo) and a mask."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size]
    base = np.stack([x * 255 // size, y * 255 // size, (x + y) * 127 // size], axis=-1)
    rgb = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    mask = np.zeros((size, size), np.uint8)
    mask[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 255
    return Image.fromarray(rgb, "RGB"), Image.fromarray(mask, "L")


class _Wire:
    """Counts what every widget sends (JSON + buffers) while installed."""

    def __init__(self) -> None:
        import ipywidgets

        self.bytes = 0
        self._cls = ipywidgets.Widget
        self._orig = ipywidgets.Widget._send
        wire = self

        def send(widget: Any, msg: Any, buffers: Any = None) -> Any:
            wire.bytes += len(json.dumps(msg, default=str)) + sum(len(b) for b in buffers or [])
            return wire._orig(widget, msg, buffers)

        self._cls._send = send

    def close(self) -> None:
        self._cls._send = self._orig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=int, default=10)
    parser.add_argument("--folder", type=Path, default=None, help="reuse this sweep's run folder")
    args = parser.parse_args()

    import fluxnb
    from fluxnb.client import QueueClient
    from fluxnb.server import BackgroundServer, ServerConfig
    from fluxnb.sweeps import Sweep

    folder = args.folder or Path(tempfile.mkdtemp(prefix="bench-explorer-"))
    if args.folder is None:
        image, mask = _photo(args.size)
        t0 = time.perf_counter()
        with BackgroundServer(ServerConfig(engine="null", workers=4, port=0)) as server, \
                QueueClient(server.base_url) as client:
            fluxnb.sweep(client, {"prompt": "bench", "image_url": image, "mask_url": mask}, folder,
                         steps=list(range(1, args.steps + 1)),
                         guidance=[float(g) for g in range(1, args.guidance + 1)],
                         max_jobs=None, cache=False, progress=None, verbose=False, concurrency=8)
        print(f"sweep: {args.steps * args.guidance} cells of {args.size}x{args.size} in "
              f"{time.perf_counter() - t0:.1f} s; folder {folder}")
    sweep = Sweep.load(folder)
    files = [Path(str(f)) for f in sweep.frame["file"]]
    full = statistics.mean(f.stat().st_size for f in files)
    print(f"full-size output file: {full / 1e6:.2f} MB on average")

    t1 = time.perf_counter()
    explorer = sweep.explore(width=args.width)
    print(f"explore(): {1000 * (time.perf_counter() - t1):.0f} ms to build and show the first cell")
    swipe_s: list[float] = []
    set_images = explorer.swipe.set_images

    def timed(*a: Any, **k: Any) -> None:
        t = time.perf_counter()
        set_images(*a, **k)
        swipe_s.append(time.perf_counter() - t)

    explorer.swipe.set_images = timed  # type: ignore[method-assign]
    wire = _Wire()
    try:
        for label in ("first visit", "cached"):
            sent, times, in_swipe = [], [], []
            for guidance in range(1, min(args.guidance, 3) + 1):
                explorer.select(guidance=float(guidance), steps=1)
                for _ in range(args.steps - 1):
                    before = wire.bytes
                    t = time.perf_counter()
                    mark = len(swipe_s)
                    explorer.step("steps", 1)       # what an arrow key on the steps slider does
                    times.append(time.perf_counter() - t)
                    in_swipe.append(sum(swipe_s[mark:]))
                    sent.append(wire.bytes - before)
            own = [t - w for t, w in zip(times, in_swipe, strict=True)]
            print(f"{label}: {len(times)} steps; bytes sent per step: median "
                  f"{statistics.median(sent) / 1e3:.1f} kB (max {max(sent) / 1e3:.1f} kB, full-size "
                  f"pair would be {2 * full / 1e3:.0f} kB); slider move -> images set: median "
                  f"{1000 * statistics.median(times):.1f} ms, max {1000 * max(times):.1f} ms, of "
                  f"which SwipeView.set_images median {1000 * statistics.median(in_swipe):.1f} ms "
                  f"(explorer's own part {1000 * statistics.median(own):.1f} ms)")
    finally:
        wire.close()
    print(f"display size {explorer.swipe.display_size}, payload {explorer.swipe.payload_bytes} bytes, "
          f"cache {explorer.images.hits} hits / {explorer.images.misses} misses")
    explorer.close()


if __name__ == "__main__":
    main()
