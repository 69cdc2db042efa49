"""The `trainserve` command line: validate resources, print CRDs (more commands join as they land)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from .api.crd import all_crds, crd_filename
from .api.validation import InvalidResource, load_documents, validate_document


def dump_yaml(document: object) -> str:
    """YAML as we write it everywhere: block style, keys sorted, no line folding."""
    return yaml.safe_dump(document, sort_keys=True, width=10_000, default_flow_style=False)


def _read(path: str) -> str:
    return sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")


def cmd_validate(args: argparse.Namespace) -> int:
    """Check each document of each file; print every problem with its field path and a fix."""
    failed = False
    for path in args.filename:
        try:
            documents = load_documents(_read(path))
        except InvalidResource as invalid:
            for problem in invalid.problems:
                print(f"{path}: {problem}")
            failed = True
            continue
        except OSError as err:
            print(f"{path}: cannot read: {err.strerror}", file=sys.stderr)
            failed = True
            continue
        for index, document in enumerate(documents):
            label = path if len(documents) == 1 else f"{path}[{index}]"
            name = document.get("metadata", {}).get("name", "?") if isinstance(document, dict) else "?"
            kind = document.get("kind", "?") if isinstance(document, dict) else "?"
            problems = validate_document(document)
            if problems:
                failed = True
                for problem in problems:
                    print(f"{label}: {kind}/{name}: {problem}")
            elif not args.quiet:
                print(f"{label}: {kind}/{name}: valid")
    return 1 if failed else 0


def cmd_crds(args: argparse.Namespace) -> int:
    """Print the CRDs, or write one file each into a folder."""
    crds = all_crds()
    if args.output_dir is None:
        sys.stdout.write("---\n".join(dump_yaml(crd) for crd in crds))
        return 0
    folder = Path(args.output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    header = "# Generated from the trainserve API models by `make crds`; do not edit.\n"
    for crd in crds:
        (folder / crd_filename(crd)).write_text(header + dump_yaml(crd), encoding="utf-8")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trainserve", description="Kubernetes-native training and serving on Ray.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = commands.add_parser("validate", help="check TrainingJob/ModelService YAML against the API")
    validate.add_argument(
        "-f", "--filename", action="append", required=True, help="YAML file ('-' for stdin); repeatable"
    )
    validate.add_argument("-q", "--quiet", action="store_true", help="print problems only")
    validate.set_defaults(func=cmd_validate)

    crds = commands.add_parser("crds", help="print the CustomResourceDefinitions")
    crds.add_argument("-o", "--output-dir", help="write one file per CRD into this folder instead")
    crds.set_defaults(func=cmd_crds)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
