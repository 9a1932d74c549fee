"""Which `mammoflow` command each rule of workflow/rules/*.smk runs, read off its shell command."""

import re

from conftest import REPO

RULES = REPO / "workflow/rules"


def rule_commands() -> dict[str, str]:
    """Each rule of workflow/rules/*.smk that runs `python -m mammoflow <command>`, with its command
    (a `use rule A as B` rule runs A's)."""
    commands = {}
    for path in sorted(RULES.glob("*.smk")):
        text = path.read_text()
        for name, body in re.findall(r"^rule (\w+):\n(.*?)(?=^\S|\Z)", text, flags=re.M | re.S):
            found = re.search(r"python -m mammoflow ([\w-]+)", body)
            if found:
                commands[name] = found.group(1)
        for base, name in re.findall(r"^use rule (\w+) as (\w+)", text, flags=re.M):
            commands[name] = commands[base]
    return commands
