"""What `rankface` imports before it does anything, and the settings parser shared by the training commands."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rankface.training.arguments import parse_training_args

# Modules that take seconds to import: `rankface --help` needs none of them, `rankface train --help` only the
# settings (transformers' argument parser), not the training loop.
PROBE = """
import sys
from rankface.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
heavy = ("torch", "transformers", "peft", "accelerate", "rankface.training.loop", "rankface.demo")
print("IMPORTED", *[name for name in heavy if name in sys.modules])
"""


def _probe(*argv: str) -> tuple[list[str], str]:
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, check=True)
    imported = next(line for line in done.stdout.splitlines() if line.startswith("IMPORTED")).split()[1:]
    return imported, done.stdout


@pytest.mark.parametrize("argv", [["--help"], ["index", "--help"], ["evaluate", "--help"]])
def test_help_imports_no_heavy_module(argv):
    imported, out = _probe(*argv)
    assert imported == [] and out.startswith("usage: rankface")


def test_train_help_names_the_subcommand_and_skips_the_training_loop():
    imported, out = _probe("train", "--help")
    assert out.startswith("usage: rankface train ")
    assert "rankface.training.loop" not in imported and "torch" not in imported
    assert "--exclude_queries_in none` or `''` empties the list" in " ".join(out.split())


@pytest.mark.parametrize("command", ["demo", "interpolate"])
def test_subcommand_help_names_the_subcommand(command):
    _, out = _probe(command, "--help")
    assert out.startswith(f"usage: rankface {command} ")


@pytest.mark.parametrize("empty", [["--exclude_queries_in", "none"], ["--exclude_queries_in", ""],
                                   ["--exclude_queries_in=none"], ["--exclude_queries_in"]])
def test_a_list_setting_can_be_emptied_on_the_command_line(tmp_path, empty):
    config = tmp_path / "c.yaml"
    config.write_text("exclude_queries_in: [dev, test]\n")
    assert parse_training_args(["--config", str(config)]).exclude_queries_in == ["dev", "test"]
    assert parse_training_args(["--config", str(config), *empty, "--max_steps", "3"]).exclude_queries_in == []
    assert parse_training_args(["--config", str(config), "--exclude_queries_in", "dev"]).exclude_queries_in == ["dev"]
