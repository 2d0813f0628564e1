"""Regenerate the bundled data sets byte-identically.

    python scripts/generate_datasets.py          # rewrite worldflux/data/bundled/
    python scripts/generate_datasets.py --check  # regenerate into a temp dir, compare bytes

``--check`` exits 1 and names every file that is missing or differs from the committed one.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

# Running ``python scripts/...`` puts scripts/ on sys.path, not the repository root; add it so
# the command works from a plain checkout as well as from an installed package.
REPO_ROOT = Path(__file__).resolve().parents[1]


def compare(generated: Path, committed: Path) -> list[str]:
    """Names of the files in ``generated`` that are missing from or differ in ``committed``."""
    problems = []
    for fresh in sorted(generated.iterdir()):
        old = committed / fresh.name
        if not old.is_file():
            problems.append(f"{old}: missing")
        elif old.read_bytes() != fresh.read_bytes():
            problems.append(f"{old}: differs from a fresh generation")
    return problems


def main(argv: list[str] | None = None) -> int:
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from worldflux.data.bundled import BUNDLED_DIR
    from worldflux.data.collect import generate_bundled

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    parser.add_argument("--out", type=Path, default=BUNDLED_DIR, help="output directory")
    args = parser.parse_args(argv)
    if not args.check:
        manifest = generate_bundled(args.out)
        for entry in manifest["datasets"].values():
            print(f"wrote {args.out / entry['file']}: {entry['rows']} rows, {entry['bytes']} B")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate_bundled(Path(tmp))
        problems = compare(Path(tmp), args.out)
    for problem in problems:
        print(problem)
    if not problems:
        print(f"all bundled files in {args.out} regenerate byte-identically")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
