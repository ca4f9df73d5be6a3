"""Render a Textual SVG screenshot to PNG with headless Chromium, at the SVG's own size.

Chromium draws the terminal's monospace grid as the terminal shows it; rsvg-convert
squeezes runs of spaces ("9.9 tok/stokens"), so it is not used. Shared by the
screenshot scripts beside this file.
"""

import re
import shutil
import subprocess
from pathlib import Path


def write_png(svg: Path) -> None:
    """svg's PNG next to it; one line instead when Chromium is not installed."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        print("chromium not found (apt-get install chromium): PNG not written")
        return
    width, height = (round(float(v)) for v in re.search(r'viewBox="0 0 ([\d.]+) ([\d.]+)"', svg.read_text()).groups())
    png = svg.with_suffix(".png")
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={png}",
         f"--window-size={width},{height}", str(svg)],
        check=True, capture_output=True,
    )  # fmt: skip
    print(f"wrote {png}")
