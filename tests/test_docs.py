"""Every command the README and docs/ show still runs in its cheap form: each command module's ``--help``, each
``plugin.train`` line's config with its overrides through ``--print-config``, every other line parsed by its
command's own parser, and every file it names present. README stays under 8 KB; links between pages resolve."""

from __future__ import annotations

import importlib
import re
import shlex
import sys

import pytest

from .helpers import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PLACEHOLDERS = {"CONFIG": "configs/demo_lora.yaml", "BASE": "embedded:smollm2-135m-instruct", "ADAPTER": "outputs/a",
                "OUT_DIR": "outputs/a", "CFG": "configs/demo_lora.yaml"}


def _command_lines(text: str) -> list[str]:
    """Shell lines of ```bash blocks (continuations joined, comments dropped), and inline `python -m plugin...`
    spans that hold no placeholder syntax ({a,b}, a|b, [optional], ...)."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" # ")[0].strip()
            if line and not line.startswith("#"):
                lines.append(line)
    lines += [span for span in re.findall(r"`(python -m plugin\.[^`]+)`", text)
              if not re.search(r"[{}|\[\]>]|\.\.\.", span)]
    return lines


def plugin_commands() -> list[tuple[str, str, list[str]]]:
    """(page, module, arguments) of every documented plugin command, launchers and set-up prefixes removed."""
    found = []
    for page in PAGES:
        for line in _command_lines(page.read_text()):
            words = [PLACEHOLDERS.get(w, w) for w in shlex.split(line)]
            if "-m" not in words or not words[words.index("-m") + 1].startswith("plugin."):
                continue
            at = words.index("-m")
            if len(words) == at + 2:
                continue  # the command named in a sentence, not a command line
            found.append((page.name, words[at + 1], words[at + 2:]))
    return found


COMMANDS = plugin_commands()


def test_the_docs_show_every_command():
    shown = {module for _, module, _ in COMMANDS}
    assert shown >= {"plugin.train", "plugin.eval", "plugin.lm_eval", "plugin.plot", "plugin.bench", "plugin.study",
                     "plugin.chat", "plugin.export", "plugin.serve"}
    assert len(COMMANDS) > 20  # the extraction reads the pages (a broken pattern would find nothing)


@pytest.mark.parametrize("module", sorted({module for _, module, _ in COMMANDS}))
def test_help_runs(module, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", [module])  # lm-eval's CLI reads sys.argv
    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(module).main(["--help"])
    assert exit_info.value.code in (0, None) and "usage" in capsys.readouterr().out.lower()


@pytest.mark.parametrize("page,module,args", COMMANDS, ids=[f"{p}:{m}:{' '.join(a)[:60]}" for p, m, a in COMMANDS])
def test_documented_command_is_valid(page, module, args, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    for word in args:  # files the line names (configs, accelerate configs) exist
        if re.fullmatch(r"configs/\S+\.(yaml|json)", word):
            assert (REPO / word).is_file(), f"{page}: {word} does not exist"
    if "--help" in args:
        return  # test_help_runs
    if module == "plugin.train":
        if not {"--config-reference", "--print-config"} & set(args):
            args = [*args, "--print-config"]
        assert importlib.import_module(module).main(args) == 0
        return
    if module == "plugin.lm_eval" or args[:1] == ["compare"]:
        return  # lm-eval's own arguments (its --help ran above); compare takes folders of earlier runs
    importlib.import_module(module)._parser().parse_args(args)


def test_readme_is_short_and_links_resolve():
    assert len((REPO / "README.md").read_bytes()) <= 8 * 1024
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if not target.startswith("http"):
                assert (page.parent / target).exists(), f"{page.name} links to missing {target}"
