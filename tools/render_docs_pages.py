"""Render pages of the built documentation to PNG with headless Chromium, to look at.

    sphinx-build -W -b html docs docs/_build/html
    python tools/render_docs_pages.py                 # writes docs/_shots/*.png

The pages: the API page of ``cross_entropy`` (a numpydoc signature, parameter list and
example), user-guide pages with tables and code (choosing a function, softmax and
cross-entropy), the scoring page with its reliability diagrams, and the performance page
with its chart. Chromium comes from Debian's packages (``apt-get install chromium``);
``--chromium PATH`` or $CHROMIUM names another binary.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = {
    "api_cross_entropy": "generated/xent_fast.cross_entropy.html",
    "guide_softmax_cross_entropy": "guide/softmax_cross_entropy.html",
    "guide_choosing": "guide/choosing.html",
    "guide_scoring": "guide/scoring.html",
    "performance": "performance/index.html",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--html", default=os.path.join(ROOT, "docs", "_build", "html"))
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "_shots"))
    parser.add_argument("--chromium", default=os.environ.get("CHROMIUM"))
    parser.add_argument("--size", default="1280,2400", help="window width,height in pixels")
    args = parser.parse_args()
    chromium = args.chromium or shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("no chromium found: apt-get install chromium, or pass --chromium PATH")
    os.makedirs(args.out, exist_ok=True)
    for name, page in PAGES.items():
        path = os.path.join(args.html, page)
        if not os.path.exists(path):
            sys.exit(f"{path} does not exist: build the html first")
        png = os.path.join(args.out, f"{name}.png")
        # --no-sandbox: CI runs as root; file:// pages need no network
        subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                f"--window-size={args.size}",
                f"--screenshot={png}",
                "file://" + path,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=120,
        )
        print(png, os.path.getsize(png), "bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
