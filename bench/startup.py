"""Start-up time of `broadcaster --help` beside `apprise --help` and bare typer apps, in one run.

Goal (issue 2): broadcaster at most 0.6 of apprise; issue 16: the `--help` of every command
too (each is timed; the slowest is shown), and `list` and `show` within 1.2 of `broadcaster
--help`. broadcaster is measured as `pip install .`
gives it (a wheel installed into a temporary folder); the editable install of `make` adds a
path finder at every start, shown on its own row. Runs are interleaved so that machine
noise hits every command alike; the table shows the median and the best of N runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BARE_TYPER = """
import typer
app = typer.Typer()
@app.command()
def announce(title: str = ""):
    "Announce."
@app.command()
def retry(incident: str = ""):
    "Retry."
app()
"""


def timed(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=True)
    return time.perf_counter() - start


def regular_install(tmp: Path) -> Path:
    """Install this checkout as users get it (`pip install .`, not editable) into `tmp`."""
    root = Path(__file__).resolve().parent.parent
    wheels, target = tmp / "wheels", tmp / "site"
    pip = [sys.executable, "-m", "pip", "--quiet"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "--wheel-dir", str(wheels), str(root)], check=True)
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(target),
                    *map(str, wheels.glob("*.whl"))], check=True)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    bindir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if k != "TYPER_USE_RICH"}
    with tempfile.TemporaryDirectory() as tmp:
        bare = Path(tmp) / "bare_typer.py"
        bare.write_text(BARE_TYPER)
        target = regular_install(Path(tmp))
        installed_env = {**env, "PYTHONPATH": str(target)}
        script = "import sys; from broadcaster.cli import main; sys.exit(main())"
        config, incident = project(Path(tmp), installed_env)
        installed = [sys.executable, "-c", script]
        commands = {
            "broadcaster --help": [*installed, "--help"],
            "broadcaster list": [*installed, "--config", config, "list"],
            "broadcaster show ID": [*installed, "--config", config, "show", incident],
            "broadcaster announce --help": [*installed, "announce", "--help"],
            "broadcaster subscribers list --help": [*installed, "subscribers", "list", "--help"],
            "  (editable dev install)": [str(bindir / "broadcaster"), "--help"],
            "apprise --help": [shutil.which("apprise", path=str(bindir)) or "apprise", "--help"],
            "bare typer app --help": [sys.executable, str(bare), "--help"],
            "python -c pass": [sys.executable, "-c", "pass"],
        }
        # Every other command's and subcommand's help, timed alike; the slowest is shown.
        shown = list(commands)  # the table's rows; the other commands' help is timed for `slowest`
        helps = {f"broadcaster {' '.join(argv)} --help": [*installed, *argv, "--help"]
                 for argv in every_command(installed_env)}
        commands.update({name: command for name, command in helps.items() if name not in commands})
        envs = {name: installed_env if name.startswith("broadcaster") else env for name in commands}
        for name, command in commands.items():  # warm the file cache
            timed(command, envs[name])
        samples: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, command in commands.items():
                samples[name].append(timed(command, envs[name]))
    apprise = statistics.median(samples["apprise --help"])
    slowest = max(helps, key=lambda name: statistics.median(samples[name]))
    print(f"start-up, {args.runs} interleaved runs each, {os.cpu_count()} cores\n")
    rows = [*shown[:5], *([] if slowest in shown else [slowest]), *shown[5:]]
    labels = {name: name for name in rows}
    labels[slowest] = f"slowest of the {len(helps)} --help: {slowest.removeprefix('broadcaster ')}"
    width = max(map(len, labels.values()))
    print(f"{'command':<{width}} {'median ms':>10} {'best ms':>9} {'vs apprise':>11}")
    for name in rows:
        values = samples[name]
        median = statistics.median(values)
        print(f"{labels[name]:<{width}} {median * 1000:>10.1f} {min(values) * 1000:>9.1f}"
              f" {median / apprise:>11.2f}")
    help_ = statistics.median(samples["broadcaster --help"])
    for name in dict.fromkeys(("broadcaster --help", "broadcaster announce --help",
                               "broadcaster subscribers list --help", slowest)):
        ratio = statistics.median(samples[name]) / apprise
        verdict = "meets" if ratio <= 0.6 else "MISSES"
        print(f"\n{name} / apprise = {ratio:.2f} ({verdict} the goal of <= 0.60)", end="")
    for name in ("broadcaster list", "broadcaster show ID"):
        ratio = statistics.median(samples[name]) / help_
        print(f"\n{name} / broadcaster --help = {ratio:.2f} "
              f"({'meets' if ratio <= 1.2 else 'MISSES'} the goal of <= 1.20)", end="")
    print()


def every_command(env: dict[str, str]) -> list[list[str]]:
    """Each command and subcommand, as the words that name it (`cli.command_names`), as the
    installed broadcaster has them."""
    import json

    code = "import json; from broadcaster.cli import command_names; print(json.dumps(command_names()))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout)


def project(tmp: Path, env: dict[str, str]) -> tuple[str, str]:
    """A settings file and one published incident (website only) for `list` and `show`."""
    import json

    config = tmp / "settings.toml"
    config.write_text('[organization]\nname = "Bench"\nlocales = ["en", "es"]\n[site]\n'
                      'base_url = "https://status.example.com"\noutput_dir = "public"\n'
                      '[state]\npath = "state.db"\n', encoding="utf-8")
    script = "import sys; from broadcaster.cli import main; sys.exit(main())"
    done = subprocess.run([sys.executable, "-c", script, "--config", str(config), "announce",
                           "--title", "Slow", "--message", "Slow.", "--yes", "--json"],
                          capture_output=True, text=True, env=env, check=True)
    return str(config), json.loads(done.stdout)["incident_id"]


if __name__ == "__main__":
    main()
