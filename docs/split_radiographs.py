"""Split a radiograph folder into training and held-out folders of symbolic links, by patient.

    python docs/split_radiographs.py XRAY_DIR configs/heldout-radiographs.txt TRAIN_DIR HELDOUT_DIR

``configs/heldout-radiographs.txt`` lists one held-out patient per line (the id, then the file
names of that patient's images). Every radiograph under XRAY_DIR whose file name is listed goes
to HELDOUT_DIR, the rest to TRAIN_DIR, keeping the sub-folders (chest/, spine/, ...). Nothing is
copied: the two folders hold links to the files.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(xray: Path, listing: Path, train: Path, heldout: Path) -> None:
    lines = [line.split() for line in listing.read_text(encoding="utf-8").splitlines() if line.strip()]
    held = {name for words in lines if not words[0].startswith("#") for name in words[1:]}
    counts = {train: 0, heldout: 0}
    for path in sorted(p for p in xray.rglob("*") if p.is_file() and not p.name.startswith(".")):
        target = (heldout if path.name in held else train) / path.relative_to(xray)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.symlink_to(path.resolve())
        counts[heldout if path.name in held else train] += 1
    print(f"{counts[train]} radiographs -> {train}, {counts[heldout]} held out -> {heldout}")


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    main(*(Path(a) for a in sys.argv[1:]))
