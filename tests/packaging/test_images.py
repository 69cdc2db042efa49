"""The container images, checked statically (there is no Docker engine here): base images pinned by digest (or
explicitly not yet, and then refused by the build), Python packages held to the constraints, non-root users that
match what the chart and the builders expect, the right extras, entrypoints that fit the chart."""

from __future__ import annotations

import fnmatch
import importlib.util
import re
import tomllib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.packaging.chart import REPO, chart_values, container


def script(name: str) -> ModuleType:
    """A script of ``deploy/`` (not a package), loaded as a module."""
    spec = importlib.util.spec_from_file_location(f"trainserve_deploy_{name}", REPO / "deploy" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pin_images = script("pin_images")
lock_python = script("lock_python")
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


def base_images(path: str, build_args: dict[str, str] | None = None) -> list[str]:
    """The images the Dockerfile pulls (a stage built on an earlier stage pulls nothing)."""
    found = stages(path, build_args)
    names = {ins.args.split(" AS ")[1] for ins in instructions((REPO / path).read_text()) if " AS " in ins.args}
    return [image for image, _ in found if image not in names]


def final_image(path: str, build_args: dict[str, str] | None = None) -> str:
    """The image the final stage is built on, through the stage it names."""
    text = (REPO / path).read_text()
    froms = [ins.args for ins in instructions(text) if ins.keyword == "FROM"]
    by_name = {
        f.split(" AS ")[1]: image for f, (image, _) in zip(froms, stages(path, build_args), strict=True) if " AS " in f
    }
    image = stages(path, build_args)[-1][0]
    return by_name.get(image, image)


def exact_tag(image: str) -> bool:
    name, _, tag = image.split("@")[0].rpartition(":")
    return bool(name) and "/" not in tag and tag != "latest" and re.match(r"^v?\d+\.\d+\.\d+", tag) is not None


def by_digest(image: str) -> bool:
    return re.search(r"@sha256:[0-9a-f]{64}$", image) is not None


def final_user(path: str) -> str:
    users = [ins.args for ins in stages(path)[-1][1] if ins.keyword == "USER"]
    assert users, f"{path}: the final stage sets no USER"
    return users[-1]


def run_lines(path: str) -> str:
    return "\n".join(ins.args for _, stage in stages(path) for ins in stage if ins.keyword == "RUN")


BUILDS = [("operator/Dockerfile", {}), ("workloads/Dockerfile", {}), ("workloads/Dockerfile", {"VARIANT": "-gpu"})]


@pytest.mark.parametrize(("path", "build_args"), BUILDS)
def test_base_images_are_pinned_by_digest_or_explicitly_unresolved(path: str, build_args: dict[str, str]) -> None:
    """Every base image has an exact tag and the digest the lock records; one the lock marks UNRESOLVED (no digest
    could be looked up yet) has none, and the build refuses it unless told ALLOW_UNPINNED_BASE."""
    lock = pin_images.read_lock(pin_images.LOCK.read_text())
    for image in base_images(path, build_args):
        tag, _, digest = image.partition("@")
        assert exact_tag(image), image
        assert tag in lock, f"{tag} is not in deploy/base-images.lock"
        if lock[tag] is None:
            assert digest == "", image
            assert "ALLOW_UNPINNED_BASE" in run_lines(path), f"{path} builds from an unpinned {tag} silently"
        else:
            assert by_digest(image) and digest == lock[tag], image


def test_the_python_base_image_has_a_real_digest() -> None:
    """The operator's base has its published digest; only Ray's images may wait for `make pin-images`."""
    (image,) = set(base_images("operator/Dockerfile"))
    assert by_digest(image)
    lock = pin_images.read_lock(pin_images.LOCK.read_text())
    assert sorted(tag for tag, digest in lock.items() if digest is None) == [pin_images.RAY_CPU, pin_images.RAY_GPU]


def test_the_dockerfiles_agree_with_the_lock() -> None:
    lock = pin_images.read_lock(pin_images.LOCK.read_text())
    for path in ("operator/Dockerfile", "workloads/Dockerfile"):
        text = (REPO / path).read_text()
        assert pin_images.pinned_dockerfile(path, text, lock) == text, f"{path}: run `make pin-images --offline`"
    pinned = {**lock, pin_images.RAY_CPU: "sha256:" + "a" * 64}
    workloads = pin_images.pinned_dockerfile(
        "workloads/Dockerfile", (REPO / "workloads/Dockerfile").read_text(), pinned
    )
    assert f'ARG RAY_CPU_DIGEST="@sha256:{"a" * 64}"' in workloads and 'ARG RAY_GPU_DIGEST=""' in workloads


@pytest.mark.parametrize(
    "line", ["python:3 sha256:abc", "python:3", "python:3 latest", f"python:3 sha256:{'A' * 64}", "a b c"]
)
def test_a_malformed_lock_line_is_refused_with_its_number(line: str) -> None:
    with pytest.raises(ValueError, match=r"base-images.lock:2: expected"):
        pin_images.read_lock(f"# comment\n{line}\n")


@pytest.mark.parametrize(("image", "extra_name"), [("operator", "operator"), ("workloads", "workloads")])
def test_python_packages_are_held_to_the_constraints(image: str, extra_name: str) -> None:
    """Every dependency of the image's extra has one exact version in its constraints, within pyproject's range,
    and the Dockerfile installs with them."""
    path = REPO / "constraints" / f"{image}.txt"
    pins = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version and canonicalize_name(name) == name, line
            pins[name] = version
    for requirement in map(Requirement, [*pyproject()["project"]["dependencies"], *extra(extra_name)]):
        version = pins.get(canonicalize_name(requirement.name))
        assert version is not None, f"{requirement.name} is not in {path.name}"
        assert requirement.specifier.contains(version, prereleases=True), (requirement, version)
    assert f"-c constraints/{image}.txt" in run_lines(f"{image}/Dockerfile")
    assert "kopf" not in pins if image == "workloads" else "ray" not in pins


def test_the_constraints_generator_follows_extras_and_markers() -> None:
    versions = lock_python.closure([Requirement("ray[serve]==2.60.*")])
    assert "ray" in versions and "fastapi" in versions  # serve's extra brings FastAPI
    assert "fastapi" not in lock_python.closure([Requirement("ray==2.60.*")])
    assert lock_python.closure([Requirement('kopf; python_version < "3"')]) == {}


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
    image = final_image("workloads/Dockerfile")
    match = re.match(r"^rayproject/ray:(\d+\.\d+\.\d+)-py311(@sha256:[0-9a-f]{64})?$", image)
    assert match, image
    ray_version = match.group(1)
    assert ray_pin.endswith(f"=={ray_version.rsplit('.', 1)[0]}.*"), (ray_pin, ray_version)
    assert chart_values()["workloads"]["rayVersion"] == ray_version

    from trainserve.settings import OperatorSettings

    assert OperatorSettings().ray_version == ray_version
    gpu = final_image("workloads/Dockerfile", {"VARIANT": "-gpu"})
    assert gpu.split("@")[0] == f"rayproject/ray:{ray_version}-py311-gpu"

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
    assert allowed == {
        "pyproject.toml",
        "README.md",
        "constraints/*.txt",
        "operator/trainserve/**",
        "workloads/trainserve_workloads/**",
    }
    for path in ("operator/Dockerfile", "workloads/Dockerfile"):
        for _, stage in stages(path):
            for ins in stage:
                if ins.keyword == "COPY" and not ins.args.startswith("--from"):
                    sources = [a for a in ins.args.split()[:-1] if not a.startswith("--")]
                    for source in sources:
                        assert any(
                            source == a or a.startswith(source.rstrip("/") + "/") or fnmatch.fnmatch(source, a)
                            for a in allowed
                        ), source
