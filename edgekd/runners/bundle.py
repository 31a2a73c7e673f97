"""The device package (:mod:`edgekd.device`) as one file to ship: a zipapp of its modules.

Inside the archive the package is named ``edgekd_device`` (its modules import one another
relatively), so nothing on the device's own ``sys.path`` named ``edgekd`` can mix in::

    python3 edgekd_device.pyz run MODEL --input X.npy --result R.json ...
"""

from __future__ import annotations

import shutil
import tempfile
import zipapp
from pathlib import Path

from edgekd import device

NAME = "edgekd_device.pyz"
PACKAGE = "edgekd_device"


def build_bundle(dest: Path) -> Path:
    """Write the zipapp of :mod:`edgekd.device` to ``dest`` (a file, or a folder to hold
    :data:`NAME`); its path."""
    dest = dest / NAME if dest.is_dir() else dest
    with tempfile.TemporaryDirectory() as tmp:
        package = Path(tmp) / PACKAGE
        package.mkdir()
        for source in sorted(Path(device.__file__).parent.glob("*.py")):
            shutil.copyfile(source, package / source.name)
        # zipapp's own main= ignores the return value: the exit status must reach the host
        main = f"import sys\n\nfrom {PACKAGE}.cli import main\n\nsys.exit(main())\n"
        (Path(tmp) / "__main__.py").write_text(main)
        zipapp.create_archive(tmp, dest)
    return dest
