"""The container images, checked statically (there is no Docker engine here): pinned base images, non-root
users that match what the chart and the builders expect, the right extras, entrypoints that fit the chart."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from typing import Any

import pytest

from tests.packaging.chart import REPO, chart_values, container

OPERATOR = REPO / "operator" / "Dockerfile"
WORKLOADS = REPO / "workloads" / "Dockerfile"


@dataclass
class Instruction:
    keyword: str
    args: str


def instructions(text: str) -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    out: list[Instruction] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        pending += (" " if pending else "") + stripped.removesuffix("\\").strip()
        if stripped.endswith("\\"):
            continue
        keyword, _, args = pending.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip()))
        pending = ""
    return out


def stages(path: str, build_args: dict[str, str] | None = None) -> list[tuple[str, list[Instruction]]]:
    """(resolved base image, instructions) of each stage, with ARG defaults and ``build_args`` substituted."""
    text = (REPO / path).read_text()
    args: dict[str, str] = {}
    out: list[tuple[str, list[Instruction]]] = []
    for ins in instructions(text):
        if ins.keyword == "ARG":
            name, _, default = ins.args.partition("=")
            if name not in args:
                args[name] = (build_args or {}).get(name, default.strip('"'))
            if out:
                out[-1][1].append(ins)
        elif ins.keyword == "FROM":
            image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], ins.args.split(" AS ")[0].split()[0])
            out.append((image, []))
        elif out:
            out[-1][1].append(ins)
    return out


def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def extra(name: str) -> list[str]:
    found: list[str] = pyproject()["project"]["optional-dependencies"][name]
    return found


def pinned(image: str) -> bool:
    """A tag with an exact version (a digest is better still), never `latest`."""
    if "@sha256:" in image:
        return True
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and tag != "latest" and re.match(r"^v?\d+\.\d+\.\d+", tag) is not None


def final_user(path: str) -> str:
    users = [ins.args for ins in stages(path)[-1][1] if ins.keyword == "USER"]
    assert users, f"{path}: the final stage sets no USER"
    return users[-1]


def run_lines(path: str) -> str:
    return "\n".join(ins.args for _, stage in stages(path) for ins in stage if ins.keyword == "RUN")


@pytest.mark.parametrize(
    ("path", "build_args"),
    [("operator/Dockerfile", {}), ("workloads/Dockerfile", {}), ("workloads/Dockerfile", {"VARIANT": "-gpu"})],
)
def test_base_images_are_pinned(path: str, build_args: dict[str, str]) -> None:
    for image, _ in stages(path, build_args):
        assert pinned(image), image


def test_operator_image() -> None:
    images = {image for image, _ in stages("operator/Dockerfile")}
    assert len(images) == 1 and re.match(r"^python:3\.11\.\d+-slim", images.pop())
    assert pyproject()["project"]["requires-python"] == ">=3.11"
    runs = run_lines("operator/Dockerfile")
    assert '".[operator]"' in runs and "workloads" not in runs
    copies = [ins.args for _, stage in stages("operator/Dockerfile") for ins in stage if ins.keyword == "COPY"]
    assert not any("workloads" in c for c in copies), "the operator image must not carry the workloads"
    assert "kopf" in " ".join(extra("operator")) and not any(
        d.startswith(("ray", "tensorflow")) for d in extra("operator")
    )


def test_operator_image_user_and_entrypoint_fit_the_chart() -> None:
    user = final_user("operator/Dockerfile")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0, "a numeric non-root USER lets the kubelet enforce runAsNonRoot"
    pod = chart_values()["podSecurityContext"]
    assert (int(uid), int(gid)) == (pod["runAsUser"], pod["runAsGroup"])
    final = stages("operator/Dockerfile")[-1][1]
    entrypoint = next(ins.args for ins in final if ins.keyword == "ENTRYPOINT")
    assert entrypoint == '["trainserve", "run"]'
    assert "run" not in container()["args"], "the chart passes flags only: the entrypoint is `trainserve run`"
    exposed = {int(p) for ins in final if ins.keyword == "EXPOSE" for p in ins.args.split()}
    assert exposed == {chart_values()["metrics"]["port"], chart_values()["health"]["port"]}


def test_workload_image() -> None:
    ray_pin = next(d for d in extra("workloads") if d.startswith("ray["))
    tf_pin = next(d for d in extra("workloads") if d.startswith("tensorflow"))
    keras_pin = next(d for d in extra("workloads") if d.startswith("tf-keras"))
    ((image, _),) = stages("workloads/Dockerfile")
    match = re.match(r"^rayproject/ray:(\d+\.\d+\.\d+)-py311$", image)
    assert match, image
    ray_version = match.group(1)
    assert ray_pin.endswith(f"=={ray_version.rsplit('.', 1)[0]}.*"), (ray_pin, ray_version)
    assert chart_values()["workloads"]["rayVersion"] == ray_version

    from trainserve.settings import OperatorSettings

    assert OperatorSettings().ray_version == ray_version
    ((gpu, _),) = stages("workloads/Dockerfile", {"VARIANT": "-gpu"})
    assert gpu == f"rayproject/ray:{ray_version}-py311-gpu"

    runs = run_lines("workloads/Dockerfile")
    assert '".[workloads]"' in runs and "[operator]" not in runs
    tf_version = tf_pin.split("==")[1]
    assert keras_pin == f"tf-keras=={tf_version}"
    default_tf = next(
        ins.args.split("=", 1)[1]
        for _, s in stages("workloads/Dockerfile")
        for ins in s
        if ins.args.startswith("TENSORFLOW_VERSION=")
    )
    assert default_tf == tf_version
    assert "tf-keras==${TENSORFLOW_VERSION}" in runs and "tensorflow[and-cuda]" in runs


def test_workload_image_user_fits_the_ray_pods() -> None:
    from trainserve.builders.common import RAY_GID, RAY_UID

    assert final_user("workloads/Dockerfile") == f"{RAY_UID}:{RAY_GID}"


def test_docker_context_holds_only_sources() -> None:
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "start from nothing and list what the builds need"
    allowed = {line[1:] for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "operator/trainserve/**", "workloads/trainserve_workloads/**"}
    for path in ("operator/Dockerfile", "workloads/Dockerfile"):
        for _, stage in stages(path):
            for ins in stage:
                if ins.keyword == "COPY" and not ins.args.startswith("--from"):
                    sources = [a for a in ins.args.split()[:-1] if not a.startswith("--")]
                    for source in sources:
                        assert any(source == a or a.startswith(source.rstrip("/") + "/") for a in allowed), source
