"""Rewrite the JSON Schemas shipped in surgeon/report/schemas/ from the report models
(``--check``: compare only, exit 1 when a shipped file is stale)."""

from __future__ import annotations

import sys

from surgeon.report.schema import main

if __name__ == "__main__":
    sys.exit(main())
