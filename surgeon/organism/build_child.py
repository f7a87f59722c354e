"""Entry point of the pinned-numerics organism build (:func:`surgeon.organism.numerics.
build_in_child`): ``python -m surgeon.organism.build_child OUT_DIR FINAL_DIR CONFIG_JSON``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from surgeon.organism import numerics
from surgeon.organism.build import build_organism
from surgeon.organism.config import OrganismConfig


def main(argv: list[str]) -> int:
    out_dir, final_dir, config_json = argv
    if numerics.needs_child():  # the environment did not take: never build unpinned
        print(
            f"organism build: kernels are {numerics.current()}, expected {numerics.expected()}",
            file=sys.stderr,
        )
        return 3
    build_organism(
        Path(out_dir), OrganismConfig.from_dict(json.loads(config_json)), final_dir=Path(final_dir)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
