"""`trainserve validate` and `trainserve crds` as a user runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from tests.support.documents import EXAMPLES, changed, example
from trainserve.api.validation import load_documents

CLI = [sys.executable, "-m", "trainserve.cli"]


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, input=stdin, timeout=60)


def test_valid_examples_pass() -> None:
    files = [str(p) for p in sorted(EXAMPLES.glob("*.yaml"))]
    result = run("validate", *[a for f in files for a in ("-f", f)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(": valid") == len(files)


#: Two problems: a dataset with both `builtin` and `uri`, and a negative GPU count.
BAD_JOB = changed(
    changed(example("digits-trainingjob"), "spec.dataset.uri", "s3://b/x.npz"), "spec.resources.gpusPerWorker", -2
)


def test_problems_are_printed_with_path_and_fix_and_exit_1(tmp_path: Path) -> None:
    bad = BAD_JOB
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump_all([example("digits-modelservice"), bad]))
    result = run("validate", "-f", str(path), "--quiet")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert any(f"{path}[1]: TrainingJob/digits: spec.dataset:" in line for line in lines), result.stdout
    assert any("spec.resources.gpusPerWorker:" in line for line in lines)
    assert sum(line.strip().startswith("fix:") for line in lines) == 2
    assert "ModelService/digits" not in result.stdout  # valid documents are quiet with --quiet


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("kind: TrainingJob\nspec:\n  model: [unclosed\n")
    result = run("validate", "-f", str(path))
    assert result.returncode == 1
    assert "not valid YAML" in result.stdout and "line " in result.stdout


def test_stdin_is_read_with_dash() -> None:
    result = run("validate", "-f", "-", stdin=(EXAMPLES / "digits-trainingjob.yaml").read_text())
    assert result.returncode == 0 and "TrainingJob/digits: valid" in result.stdout


def test_crds_command_prints_both_crds() -> None:
    result = run("crds")
    assert result.returncode == 0
    names = [d["metadata"]["name"] for d in yaml.safe_load_all(result.stdout)]
    assert names == ["trainingjobs.trainserve.io", "modelservices.trainserve.io"]


def test_yaml_is_read_as_kubectl_reads_it() -> None:
    """Go's YAML: `1e-3` is a number (PyYAML makes it a string), `2024-01-01` a string (PyYAML makes it a date)."""
    (document,) = load_documents("learningRate: 1e-3\ncpus: 500m\nuri: 2024-01-01\nepochs: 12\n")
    assert document == {"learningRate": 0.001, "cpus": "500m", "uri": "2024-01-01", "epochs": 12}


def test_cpu_quantities_and_exponents_are_valid(tmp_path: Path) -> None:
    text = (EXAMPLES / "digits-trainingjob.yaml").read_text()
    for cpus in ("500m", '"1"', "1.5", '"0.25"'):
        path = tmp_path / "job.yaml"
        path.write_text(
            text.replace("cpusPerWorker: 1", f"cpusPerWorker: {cpus}").replace(
                "learningRate: 0.002", "learningRate: 2e-3"
            )
        )
        assert "learningRate: 2e-3" in path.read_text()
        result = run("validate", "-f", str(path))
        assert result.returncode == 0, result.stdout
