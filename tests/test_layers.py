"""Dependencies point down only (docs/architecture.md, pyproject's [tool.importlinter]): each layer
imports only what lies below it, only broker.nats imports nats-py, and the rules do no I/O."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_hold() -> None:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe is not None, "import-linter is part of the test extra: pip install -e '.[test]'"
    done = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 kept, 0 broken" in done.stdout, done.stdout


def test_no_module_is_over_400_lines() -> None:
    """Modules small and named for what they own (issue 11): none of the packages' over 400 lines."""
    big = {
        str(p.relative_to(ROOT)): n
        for pkg in ("broker", "adapters", "schemas")
        for p in (ROOT / pkg).rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400
    }
    assert big == {}
