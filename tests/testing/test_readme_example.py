"""README's "Testing your own code" example, run as written."""

from __future__ import annotations

import re
from pathlib import Path

import anyio

from asynctrainer import Runner

README = Path(__file__).resolve().parents[2] / "README.md"


def _readme_example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Testing your own code") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


async def test_readme_testing_example_runs_with_the_plugin_fixtures(runner: Runner) -> None:
    namespace: dict[str, object] = {}
    exec(compile(_readme_example(), str(README), "exec"), namespace)
    test = namespace["test_my_bot_keeps_acting_while_the_policy_updates"]
    with anyio.fail_after(60):
        await test(runner)  # type: ignore[operator]
