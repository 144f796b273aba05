"""Print one of the README's commands: the fenced line after ``<!-- NAME-command -->``.

    python3 .ci/readme_command.py test    # the command CI runs
    python3 .ci/readme_command.py demo    # the main job
"""

import pathlib
import re
import sys


def readme_command(name: str, readme: pathlib.Path) -> str:
    text = readme.read_text(encoding="utf-8")
    match = re.search(rf"<!-- {name}-command -->\s*```(?:bash|sh)?\n(.*?)\n```", text, re.S)
    if not match:
        raise SystemExit(f"README.md has no <!-- {name}-command --> block")
    return match.group(1).strip()


if __name__ == "__main__":
    root = pathlib.Path(__file__).resolve().parent.parent
    print(readme_command(sys.argv[1], root / "README.md"))
