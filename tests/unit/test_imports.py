from __future__ import annotations

import subprocess
import sys


def test_litellm_is_not_imported_by_the_proxy_or_cli() -> None:
    code = (
        "import sys, proxy.app, proxy.cli, proxy.demo\n"
        "assert 'litellm' not in sys.modules, 'litellm imported eagerly'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
