#!/usr/bin/env python3
"""Build the worker's real-text corpus: the New Testament of the King James Version, one verse
per JSONL line ({"id": "Mat1:1", "text": "..."}), 7,957 lines.

Source: Debian package `bible-kjv-text` (text) read through `bible-kjv`'s `bible` program;
the KJV text (1611) is in the public domain (see /usr/share/doc/bible-kjv-text/copyright),
the Debian packaging is GPL-2+. Nobody in this project wrote it.

Writes $AUTOGLM_CACHE/corpus/kjv-nt.jsonl (idempotent; --force rebuilds) and prints its path.
Installs the Debian package with apt-get when `bible` is missing and we are root.
"""
import argparse
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

RANGE = "Matthew1:1-Revelation22:21"
VERSE = re.compile(r"^([1-3]?[A-Za-z]+\d+:\d+) (.+)$")


def ensure_bible() -> str:
    exe = shutil.which("bible")
    if exe:
        return exe
    if os.geteuid() != 0:
        sys.exit("corpus: the `bible` program is missing: run `apt-get install bible-kjv` (Debian)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "bible-kjv"], check=True, env=env)
    exe = shutil.which("bible")
    if not exe:
        sys.exit("corpus: apt-get installed bible-kjv but `bible` is still not on PATH")
    return exe


def main() -> int:
    cache = pathlib.Path(os.environ.get("AUTOGLM_CACHE", pathlib.Path.home() / ".cache" / "open-autoglm"))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=pathlib.Path, default=cache / "corpus" / "kjv-nt.jsonl")
    p.add_argument("--force", action="store_true")
    args = p.parse_args()
    out: pathlib.Path = args.out
    if out.exists() and not args.force:
        print(out)
        return 0
    exe = ensure_bible()
    text = subprocess.run([exe, "-f", RANGE], check=True, capture_output=True, text=True, stdin=subprocess.DEVNULL).stdout
    items = []
    for raw in text.splitlines():
        m = VERSE.match(raw.strip())
        if m:
            items.append({"id": m.group(1), "text": m.group(2)})
        elif raw.strip() and items:
            # A verse wrapped over two output lines: continue the previous one.
            items[-1]["text"] += " " + raw.strip()
    if len(items) < 7000:
        sys.exit(f"corpus: expected about 7957 verses from `bible`, got {len(items)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for item in items:
            f.write(json.dumps(item, ensure_ascii=False) + "\n")
    tmp.replace(out)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
