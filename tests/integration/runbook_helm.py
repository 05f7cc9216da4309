"""MIGRATION.md's Kubernetes blocks, checked by rendering what they would install.

A `sh migration-helm` block holds `helm install|upgrade|template` commands (at least one) and
`kubectl` commands. Each helm command line is expanded by bash as the operator's shell would
(variables from the runbook's environment), parsed as Helm parses it — release, chart, `-f`
files, `--set`, `--set-string`, `--set-file`, … merged in Helm's order, `--reuse-values` on top
of the release's previous values — and rendered with tests/helm's helper. Every object must be
valid for Kubernetes, no secret value may reach the ConfigMap, and the config the pods would
read must pass `cutover check-config` with the pod's environment. `kubectl` needs a cluster and
is only parsed (`bash -n`); any other command belongs in a step before the block, which the
runbook test runs. Whatever cannot be rendered fails, with the block's place in the document.
"""

from __future__ import annotations

import shlex
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate

from tests.helm.chart_helpers import (
    CHART,
    ROOT,
    Rendered,
    check_config,
    render,
    validate_object,
)

RENDERING = ("install", "upgrade", "template")
# Flags a runbook may pass that take no value (the others are refused: the checker would not
# know whether the next word is theirs).
FLAGS = {
    "--install",
    "-i",
    "--create-namespace",
    "--reuse-values",
    "--reset-values",
    "--atomic",
    "--wait",
    "--wait-for-jobs",
    "--debug",
}
OPTIONS = {  # flags that take a value, by the name they are read under
    "-n": "namespace",
    "--namespace": "namespace",
    "-f": "values",
    "--values": "values",
    "--set": "set",
    "--set-string": "set-string",
    "--set-file": "set-file",
    "--set-json": "set-json",
    "--set-literal": "set-literal",
    "--timeout": "ignored",
    "--version": "ignored",
    "--description": "ignored",
    "--kube-context": "ignored",
}
# Helm merges the sources in this order, whatever their order on the command line.
PARSERS = {
    "set-json": helm.parse_set_json,
    "set": helm.parse_set_string,
    "set-string": helm.parse_set_string_values,
    "set-file": helm.parse_set_file,
    "set-literal": helm.parse_set_literal,
}


class HelmBlockError(AssertionError):
    """A Kubernetes block of the runbook that does not render, or renders something wrong."""


@dataclass
class HelmCommand:
    """One `helm install|upgrade|template` as the chart would receive it."""

    where: str
    subcommand: str
    release: str
    namespace: str
    values: dict[str, Any]


@dataclass
class Releases:
    """What the runbook has installed so far: release (namespace, name) -> its values, for
    `helm upgrade` without `--install` and for `--reuse-values`."""

    installed: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)


def commands(text: str) -> list[str]:
    """The block's command lines, continuations joined, blank and comment lines left out."""
    joined = text.replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip() and line.strip()[0] != "#"]


def expand(line: str, env: Mapping[str, str], where: str) -> list[str]:
    """The words of one command line after the shell's expansions (an unset variable fails),
    refusing pipes, redirections and command lists: a helm command stands alone."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    operators = [t for t in lexer if t and set(t) <= set("();<>|&")]
    if operators:
        raise HelmBlockError(f"{where}: {operators[0]!r} in a helm command: {line}")
    script = "set -u\nwords() { printf '%s\\0' \"$@\"; }\nwords " + line + "\n"
    done = subprocess.run(
        ["bash", "-c", script], env=dict(env), capture_output=True, text=True, timeout=30
    )
    if done.returncode != 0:
        raise HelmBlockError(f"{where}: the shell cannot expand {line!r}: {done.stderr.strip()}")
    return done.stdout.split("\0")[:-1]


def deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Helm's merge of values: mappings merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse(words: list[str], work: Path, releases: Releases, where: str) -> HelmCommand:
    """`helm <install|upgrade|template> …` -> the release and the values Helm would compute."""
    if len(words) < 2 or words[1] not in RENDERING:
        raise HelmBlockError(
            f"{where}: {' '.join(words[:2])!r} renders nothing; a migration-helm block's helm "
            f"commands are {', '.join(RENDERING)}"
        )
    sub, positional, flags = words[1], [], set()
    given: dict[str, list[str]] = {name: [] for name in set(OPTIONS.values())}
    namespace = "default"
    rest = iter(words[2:])
    for word in rest:
        name, eq, inline = word.partition("=")
        if not word.startswith("-"):
            positional.append(word)
        elif word in FLAGS:
            flags.add(word)
        elif name in OPTIONS:
            value = inline if eq else next(rest, None)
            if value is None:
                raise HelmBlockError(f"{where}: {name} without a value")
            if OPTIONS[name] == "namespace":
                namespace = value
            else:
                given[OPTIONS[name]].append(value)
        else:
            raise HelmBlockError(
                f"{where}: helm {sub}: flag {word!r} is not one the runbook checker knows "
                f"(known: {', '.join(sorted(FLAGS | set(OPTIONS)))})"
            )
    if sub == "template" and len(positional) == 1:
        positional.insert(0, "release-name")
    if len(positional) != 2:
        raise HelmBlockError(f"{where}: helm {sub} needs RELEASE CHART, got {positional}")
    release, chart = positional
    try:
        helm.validate_release_name(release)
    except helm.HelmError as exc:
        raise HelmBlockError(f"{where}: release name {release!r}: {exc}") from None
    if (ROOT / chart).resolve() != CHART.resolve():
        raise HelmBlockError(f"{where}: chart {chart!r} is not the repository's helm/cutover")

    key = (namespace, release)
    previous = releases.installed.get(key)
    if sub == "install" and previous is not None:
        raise HelmBlockError(f"{where}: release {release!r} in {namespace} is installed already")
    if sub == "upgrade" and previous is None and not flags & {"--install", "-i"}:
        raise HelmBlockError(
            f"{where}: no earlier block installed release {release!r} in {namespace} "
            "(helm upgrade without --install)"
        )
    values: dict[str, Any] = {}
    if previous is not None and (
        "--reuse-values" in flags
        or ("--reset-values" not in flags and not any(given[k] for k in ("values", *PARSERS)))
    ):
        values = previous  # Helm reuses the release's values when asked, or when given none
    for name in given["values"]:
        for part in name.split(","):
            path = work / part
            if not path.is_file():
                raise HelmBlockError(f"{where}: -f {part}: no earlier block wrote it")
            try:
                values = deep_merge(values, helm.values_from_yaml(path.read_text()))
            except helm.HelmError as exc:
                raise HelmBlockError(f"{where}: -f {part}: {exc}") from None
    for kind, parser in PARSERS.items():
        for expression in given[kind]:
            if kind == "set-file":  # paths are the operator's, relative to the working folder
                pairs = []
                for pair in expression.split(","):
                    target, _, path = pair.partition("=")
                    if not (work / path).is_file():
                        raise HelmBlockError(
                            f"{where}: --set-file {pair}: no earlier block wrote it"
                        )
                    pairs.append(f"{target}={work / path}")
                expression = ",".join(pairs)
            try:
                values = deep_merge(values, parser(expression))
            except helm.HelmError as exc:
                raise HelmBlockError(f"{where}: --{kind} {expression}: {exc}") from None
    if sub != "template":
        releases.installed[key] = values
    return HelmCommand(where, sub, release, namespace, values)


def plan(
    text: str, where: str, env: Mapping[str, str], work: Path, releases: Releases
) -> list[HelmCommand]:
    """Parse a block now (the files it names as they are at this point of the document); the
    rendering can come later. Fails on a block that renders nothing or runs anything else."""
    syntax = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True)
    if syntax.returncode != 0:
        raise HelmBlockError(f"{where}: not valid shell: {syntax.stderr}")
    found = []
    for line in commands(text):
        program = shlex.split(line, comments=True)[0]
        if program == "helm":
            found.append(parse(expand(line, env, where), work, releases, where))
        elif program != "kubectl":
            raise HelmBlockError(
                f"{where}: {program!r} in a migration-helm block: only helm (rendered) and "
                "kubectl (needs a cluster) belong there; run other commands in a step before it"
            )
    if not found:
        raise HelmBlockError(f"{where}: no helm install, upgrade or template to render")
    return found


def check(command: HelmCommand) -> Rendered:
    """Render `command` as Helm would, and hold what it renders to what the chart tests do."""
    try:
        rendered = render(command.values, name=command.release, namespace=command.namespace)
    except helm.HelmError as exc:
        raise HelmBlockError(f"{command.where}: helm {command.subcommand} fails: {exc}") from None
    for obj in rendered.objects:
        try:
            validate_object(obj)
        except (
            jsonschema.ValidationError,
            kubernetes_validate.ValidationError,
            kubernetes_validate.SchemaNotFoundError,
            AssertionError,
        ) as exc:
            name = f"{obj.get('kind')} {obj.get('metadata', {}).get('name')}"
            raise HelmBlockError(f"{command.where}: {name} is not valid: {exc}") from None
    text, env = rendered.config_text(), rendered.pod_env()
    for name, value in rendered.secret_env().items():
        if value in text:
            raise HelmBlockError(f"{command.where}: the ConfigMap holds the secret {name}")
    with tempfile.TemporaryDirectory(prefix="runbook-helm-") as folder:
        done = check_config(text, env, Path(folder))
    if done.returncode != 0 or ": ok — " not in done.stdout:
        raise HelmBlockError(
            f"{command.where}: the config the pods would read fails `cutover check-config` "
            f"(the init container would stop them):\n{done.stdout}{done.stderr}\n--- config\n{text}"
        )
    return rendered
