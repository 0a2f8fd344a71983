from __future__ import annotations

import subprocess
import sys


def test_import_asynctrainer_imports_no_tensorflow() -> None:
    code = (
        "import sys, asynctrainer, asynctrainer.runtime.runner, asynctrainer.settings, asynctrainer.testing.fakes;"
        "import asynctrainer.envs.gymnasium_env, asynctrainer.cli;"
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
