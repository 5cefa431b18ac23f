# SPDX-License-Identifier: MIT
"""dhafctl's shell completions (ctl/): each one loads in its shell and offers every command that
`dhafctl --help` lists (a new verb without its completion fails here); bash and fish complete a
prefix for real, zsh registers the function with compinit. A missing shell is a skip (exit 77)
that names it, after the shells that are present have been checked.
usage: /usr/bin/python3 test_completion.py BUILD_BIN_DIR"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dhafsys import run_tests  # noqa: E402

BIN = sys.argv[1] if len(sys.argv) > 1 else "build/bin"
CTL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "ctl")
BASH = os.path.join(CTL, "dhafctl.bash-completion")
ZSH = os.path.join(CTL, "_dhafctl")
FISH = os.path.join(CTL, "dhafctl.fish")
missing = []


def commands():
    """The verbs of `dhafctl --help`, in order."""
    out = subprocess.run([os.path.join(BIN, "dhafctl"), "--help"], capture_output=True,
                         text=True, timeout=10, check=True).stdout
    block = out.split("commands:\n", 1)[1].split("\n\n", 1)[0]
    verbs = [line.split()[0] for line in block.splitlines() if line.strip()]
    assert "status" in verbs and "help" in verbs and len(verbs) >= 15, verbs
    return verbs


def run(argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, **kw)


def lists_every_command(path):
    text = open(path).read()
    absent = [v for v in commands() if not re.search(r"(?<![\w-])" + re.escape(v) + r"(?![\w-])",
                                                     text)]
    assert not absent, f"{os.path.basename(path)} lacks {absent}"


def test_bash():
    lists_every_command(BASH)
    r = run(["bash", "-c", f'source "{BASH}"; COMP_WORDS=(dhafctl status-s); COMP_CWORD=1; '
             '_dhafctl; echo "${COMPREPLY[*]}"; COMP_WORDS=(dhafctl status --wa); COMP_CWORD=2; '
             '_dhafctl; echo "${COMPREPLY[*]}"; complete -p dhafctl'])
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert sorted(lines[0].split()) == ["status-service", "status-services"], lines
    assert lines[1] == "--watch", lines
    assert "-F _dhafctl" in lines[2], lines
    return "loads; 'status-s' -> status-service(s), '--wa' -> --watch; every verb listed"


def test_zsh():
    lists_every_command(ZSH)
    if not shutil.which("zsh"):
        missing.append("zsh")
        return "SKIPPED: zsh is not installed (apt-get install zsh; scripts/install-deps.sh has it)"
    r = run(["zsh", "-n", ZSH])
    assert r.returncode == 0, r.stderr
    d = tempfile.mkdtemp()
    try:
        shutil.copy(ZSH, d)
        r = run(["zsh", "-fc", f"fpath=({d} $fpath); autoload -Uz compinit; "
                 f"compinit -u -d {d}/zcompdump; print -r -- $_comps[dhafctl]; "
                 "autoload -Uz _dhafctl; whence -w _dhafctl"])
    finally:
        shutil.rmtree(d, ignore_errors=True)
    assert r.returncode == 0 and r.stdout.split() == ["_dhafctl", "_dhafctl:", "function"], \
        (r.stdout, r.stderr)
    return "zsh -n clean; compinit registers _dhafctl for dhafctl; every verb listed"


def test_fish():
    lists_every_command(FISH)
    if not shutil.which("fish"):
        missing.append("fish")
        return "SKIPPED: fish is not installed (apt-get install fish; scripts/install-deps.sh has it)"
    r = run(["fish", "-n", FISH])
    assert r.returncode == 0, r.stderr
    r = run(["fish", "--no-config", "-c", f"source {FISH}; complete -C 'dhafctl status-s'; "
             "echo ==; complete -C 'dhafctl status --wa'; echo ==; "
             "complete -C 'dhafctl version --wa'; echo ==; complete -C 'dhafctl -o j'"])
    assert r.returncode == 0, r.stderr
    parts = [[line.split("\t")[0] for line in p.strip().splitlines()]
             for p in r.stdout.split("==\n")]
    assert sorted(parts[0]) == ["status-service", "status-services"], parts
    assert parts[1] == ["--watch"], parts
    assert parts[2] == [], parts  # --watch only on the status verbs
    assert parts[3] == ["json"], parts
    return "fish -n clean; completes verbs, --watch on status verbs only; every verb listed"


def main():
    rc = run_tests([
        ("bash completion", test_bash),
        ("zsh completion", test_zsh),
        ("fish completion", test_fish),
    ])
    if rc == 0 and missing:
        print(f"SKIPPED: {' and '.join(missing)} not installed: their completion was only "
              "checked for the command list")
        return 77
    return rc


if __name__ == "__main__":
    sys.exit(main())
