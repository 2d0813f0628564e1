from __future__ import annotations

import subprocess
import sys


def test_import_worldflux_pulls_in_no_platform_packages() -> None:
    code = (
        "import sys, worldflux, worldflux.training, worldflux.planners, worldflux.data; "
        "worldflux.list_models(); "
        "print(' '.join(m for m in ('dagster', 'mlflow', 'pandas', 'great_expectations', "
        "'gymnasium') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
