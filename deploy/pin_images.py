"""Pins the Dockerfiles' base images by digest, from deploy/base-images.lock.

    python deploy/pin_images.py            # resolve every tag (crane or skopeo, needs the registry), write both
    python deploy/pin_images.py --offline  # write the Dockerfiles from the lock as it is
    python deploy/pin_images.py --check    # fail when a Dockerfile disagrees with the lock

A digest names content, not a tag that can be pushed again: the image built is the one reviewed. The digest
is the image index's (all platforms), as ``crane digest`` prints it and as ``docker pull NAME@DIGEST`` takes it.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LOCK = REPO / "deploy" / "base-images.lock"
UNRESOLVED = "UNRESOLVED"
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
#: Which Dockerfile ARG carries which locked image, and how: the whole reference, or ``@<digest>`` only.
PYTHON_IMAGE = "python:3.11.15-slim-bookworm"
RAY_CPU = "rayproject/ray:2.60.0-py311"
RAY_GPU = "rayproject/ray:2.60.0-py311-gpu"
ARGS = {
    ("operator/Dockerfile", "PYTHON_IMAGE"): (PYTHON_IMAGE, "reference"),
    ("workloads/Dockerfile", "RAY_CPU_DIGEST"): (RAY_CPU, "digest"),
    ("workloads/Dockerfile", "RAY_GPU_DIGEST"): (RAY_GPU, "digest"),
}


def read_lock(text: str) -> dict[str, str | None]:
    """``tag -> digest`` (None for UNRESOLVED); a malformed line is an error naming it."""
    out: dict[str, str | None] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or not (parts[1] == UNRESOLVED or DIGEST.match(parts[1])):
            raise ValueError(f"{LOCK.name}:{number}: expected `<tag> sha256:<64 hex>` or `<tag> {UNRESOLVED}`")
        out[parts[0]] = None if parts[1] == UNRESOLVED else parts[1]
    return out


def arg_value(image: str, digest: str | None, form: str) -> str:
    if form == "reference":
        return f"{image}@{digest}" if digest else image
    return f"@{digest}" if digest else ""


def pinned_dockerfile(path: str, text: str, lock: dict[str, str | None]) -> str:
    """``text`` (the Dockerfile at ``path``) with each locked ARG default set from ``lock``."""
    for (where, arg), (image, form) in ARGS.items():
        if where != path:
            continue
        value = arg_value(image, lock[image], form)
        text, count = re.subn(rf"^ARG {arg}=.*$", f'ARG {arg}="{value}"', text, count=1, flags=re.MULTILINE)
        if count != 1:
            raise ValueError(f"{path}: no `ARG {arg}=` line to pin")
    return text


def resolve(image: str) -> str:
    """The digest of ``image``'s index, from the registry (crane, else skopeo)."""
    if shutil.which("crane"):
        out = subprocess.run(["crane", "digest", image], check=True, capture_output=True, text=True).stdout.strip()
    elif shutil.which("skopeo"):
        raw = subprocess.run(["skopeo", "inspect", "--raw", f"docker://{image}"], check=True, capture_output=True)
        out = "sha256:" + hashlib.sha256(raw.stdout).hexdigest()
    else:
        raise SystemExit("pin-images needs `crane` or `skopeo` on PATH (and access to the registry)")
    if not DIGEST.match(out):
        raise SystemExit(f"{image}: unexpected digest {out!r}")
    return out


def write_lock(lock: dict[str, str | None]) -> None:
    lines = LOCK.read_text().splitlines()
    out = []
    for line in lines:
        parts = line.split()
        if len(parts) == 2 and parts[0] in lock and not line.startswith("#"):
            line = f"{parts[0]} {lock[parts[0]] or UNRESOLVED}"
        out.append(line)
    LOCK.write_text("\n".join(out) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="fail when a Dockerfile disagrees with the lock")
    mode.add_argument("--offline", action="store_true", help="write the Dockerfiles from the lock, resolve nothing")
    args = parser.parse_args()
    lock = read_lock(LOCK.read_text())
    if not args.check and not args.offline:
        lock = {image: resolve(image) for image in lock}
        write_lock(lock)
    stale = []
    for path in sorted({where for where, _ in ARGS}):
        current = (REPO / path).read_text()
        wanted = pinned_dockerfile(path, current, lock)
        if args.check:
            stale += [path] if wanted != current else []
        else:
            (REPO / path).write_text(wanted)
    unresolved = [image for image, digest in lock.items() if digest is None]
    if unresolved:
        print(f"not pinned yet ({UNRESOLVED} in the lock): {', '.join(unresolved)}", file=sys.stderr)
    if stale:
        print(f"{', '.join(stale)} disagree with {LOCK.name}: run `make pin-images`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
