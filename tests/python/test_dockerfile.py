"""The Dockerfile, checked without a Docker engine (none can run here):

- its instructions, parsed: two stages, pinned base images, the binary copied from the builder
  into a distroless runtime, a numeric non-root USER, the ports, the data volume, the entrypoint;
- every workspace member's manifest is copied into the dependency layer;
- that layer's stub workspace (the manifests, empty sources and bench stubs made by its RUN
  step) is a workspace cargo loads: the step's shell runs here on a copy of the manifests and
  `cargo metadata` reads the result, so a new crate or bench cannot break the image's build
  unnoticed;
- .dockerignore keeps target/, the venvs and node_modules out of the build context.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Instruction:
    op: str
    args: str
    stage: int


def parse(text: str) -> list[Instruction]:
    """Dockerfile instructions with continuation lines joined and comments dropped."""
    out: list[Instruction] = []
    stage = -1
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = (pending + stripped).strip()
        pending = ""
        op, _, args = full.partition(" ")
        op = op.upper()
        if op == "FROM":
            stage += 1
        out.append(Instruction(op, args.strip(), stage))
    assert not pending, "the Dockerfile ends inside a continued line"
    return out


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse((REPO / "Dockerfile").read_text())


def test_two_stages_with_pinned_bases(instructions: list[Instruction]):
    froms = [i.args.split() for i in instructions if i.op == "FROM"]
    assert [f[-1] for f in froms] == ["builder", "runtime"], froms
    builder, runtime = froms[0][0], froms[1][0]
    # The builder: Rust 1.95 exactly (the workspace's rust-version), on a named Debian release.
    assert re.fullmatch(r"(docker\.io/library/)?rust:1\.95(\.\d+)?-slim-bookworm", builder), builder
    # The runtime: distroless with the C runtime, its non-root variant.
    assert re.fullmatch(r"gcr\.io/distroless/cc-debian12:nonroot(@sha256:[0-9a-f]{64})?", runtime), runtime
    for image in (builder, runtime):
        assert ":" in image and not image.endswith(":latest"), image
    rust_version = tomllib.loads((REPO / "Cargo.toml").read_text())["workspace"]["package"]["rust-version"]
    assert builder.split(":")[1].startswith(rust_version), (builder, rust_version)


def test_runtime_stage(instructions: list[Instruction]):
    runtime = [i for i in instructions if i.stage == 1]
    copies = [i.args for i in runtime if i.op == "COPY"]
    assert any(c.startswith("--from=builder ") and c.endswith(" /usr/local/bin/spoor") for c in copies), copies
    # Nothing but files from the builder: no source, no toolchain in the image.
    assert all(c.startswith("--from=builder") for c in copies), copies
    assert not [i for i in runtime if i.op == "RUN"], "distroless has no shell: RUN belongs in the builder"
    users = [i.args for i in runtime if i.op == "USER"]
    assert len(users) == 1 and re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", users[0]), f"a numeric non-root USER: {users}"
    exposed = {p for i in runtime if i.op == "EXPOSE" for p in i.args.split()}
    assert exposed == {"4317", "4318", "3200"}, exposed
    assert [json.loads(i.args) for i in runtime if i.op == "VOLUME"] == [["/var/lib/spoor"]]
    assert [json.loads(i.args) for i in runtime if i.op == "ENTRYPOINT"] == [["/usr/local/bin/spoor"]]
    cmd = [json.loads(i.args) for i in runtime if i.op == "CMD"]
    assert len(cmd) == 1 and cmd[0][0] == "serve", cmd
    # The data volume belongs to the user the process runs as.
    uid = users[0].split(":")[0]
    assert any(c.startswith(f"--from=builder --chown={uid}:") and c.endswith(" /var/lib/spoor") for c in copies), copies
    # Settings live in the config file and flags: an ENV SPOOR__* in the image would silently
    # override every config file (environment variables win over the file).
    assert not [i for i in instructions if i.op == "ENV" and "SPOOR__" in i.args]


def test_builder_builds_the_binary_locked(instructions: list[Instruction]):
    builds = [i.args for i in instructions if i.op == "RUN" and "cargo build" in i.args]
    assert len(builds) == 2, "a dependency layer and the real build"
    for b in builds:
        assert "cargo build --release --locked -p spoor" in b, b


def test_every_workspace_member_is_in_the_dependency_layer(instructions: list[Instruction]):
    members = tomllib.loads((REPO / "Cargo.toml").read_text())["workspace"]["members"]
    copied = {
        m[1]
        for i in instructions
        if i.op == "COPY" and (m := re.fullmatch(r"(crates/([^/]+)/Cargo\.toml) crates/\2/", i.args))
    }
    assert copied == {f"{m}/Cargo.toml" for m in members}, sorted(copied ^ {f"{m}/Cargo.toml" for m in members})
    assert any(i.op == "COPY" and i.args == "Cargo.toml Cargo.lock ./" for i in instructions)


def test_dependency_layer_is_a_workspace_cargo_loads(instructions: list[Instruction], tmp_path: Path):
    if shutil.which("cargo") is None:
        pytest.fail("cargo is not on PATH")
    # The build context as the builder sees it before the sources: the manifests only.
    for i in instructions:
        if i.op == "COPY" and i.stage == 0 and "Cargo.toml" in i.args:
            *sources, dest = i.args.split()
            for s in sources:
                target = tmp_path / dest / Path(s).name if dest.endswith("/") else tmp_path / dest
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(REPO / s, target)
    step = next(i.args for i in instructions if i.op == "RUN" and "cargo build" in i.args)
    # The step's shell without its final build (which would compile every dependency).
    script = step.replace("cargo build --release --locked -p spoor", "true")
    assert script != step
    r = subprocess.run(["sh", "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(
        ["cargo", "metadata", "--no-deps", "--offline", "--format-version", "1"],
        cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 0, f"the stub workspace does not load:\n{r.stderr}"
    meta = json.loads(r.stdout)
    spoor = next(p for p in meta["packages"] if p["name"] == "spoor")
    assert any(t["kind"] == ["bin"] and t["name"] == "spoor" for t in spoor["targets"]), spoor["targets"]
    assert {p["name"] for p in meta["packages"]} >= {"spoor", "spoor-server", "spoor-agent"}


def test_dockerignore_keeps_the_context_small():
    patterns = [
        l.strip() for l in (REPO / ".dockerignore").read_text().splitlines() if l.strip() and not l.startswith("#")
    ]
    for needed in ("target/", ".venv*/", "**/node_modules/", ".git/"):
        assert needed in patterns, f".dockerignore lacks {needed}"
    # And keeps what the build needs.
    assert not {"crates/", "Cargo.toml", "Cargo.lock"} & set(patterns)


def test_parser_joins_continuations():
    parsed = parse("FROM a:1 AS b\n# c\nRUN x \\\n  # inner comment\n  && y\nUSER 1\n")
    assert [(i.op, i.args, i.stage) for i in parsed] == [
        ("FROM", "a:1 AS b", 0),
        ("RUN", "x  && y", 0),
        ("USER", "1", 0),
    ]
