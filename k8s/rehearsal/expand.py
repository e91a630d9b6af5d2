"""Environment variables and `$(VAR)` expansion exactly as the kubelet does them.

Kubernetes expands `$(NAME)` in env values (against the variables defined before them) and in
`command`/`args` (against the container's env); `$$` is an escaped `$`, and a reference to an
undefined variable stays as written. Image ENV is not part of that mapping.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

_OPERATOR = "$"


def expand(text: str, env: Mapping[str, str]) -> str:
    """Expand `$(VAR)` references in `text` (Kubernetes' third_party/forked/golang/expansion)."""
    out: list[str] = []
    checkpoint = 0
    cursor = 0
    while cursor < len(text):
        if text[cursor] == _OPERATOR and cursor + 1 < len(text):
            out.append(text[checkpoint:cursor])
            read, is_var, advance = _read_variable_name(text[cursor + 1 :])
            if is_var:
                out.append(env.get(read, f"$({read})"))
            else:
                out.append(read)
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    return "".join(out) + text[checkpoint:]


def _read_variable_name(rest: str) -> tuple[str, bool, int]:
    if rest[0] == _OPERATOR:  # "$$" -> "$"
        return _OPERATOR, False, 1
    if rest[0] == "(":
        end = rest.find(")", 1)
        if end != -1:
            return rest[1:end], True, end + 1
        return "$(", False, 1  # incomplete reference: kept as written
    return _OPERATOR + rest[0], False, 1


class EnvError(Exception):
    """An env source the pod cannot start with (the kubelet's CreateContainerConfigError)."""


@dataclass
class EnvSources:
    """Where env values come from: rendered/generated ConfigMaps and Secrets, pod fields."""

    config_maps: Mapping[str, Mapping[str, str]]
    secrets: Mapping[str, Mapping[str, str]]
    fields: Mapping[str, str] = field(default_factory=dict)  # fieldRef paths -> value
    resources: Callable[[str, str], str] | None = None  # (resource, divisor) -> value


def container_env(container: Mapping, sources: EnvSources) -> tuple[dict[str, str], set[str]]:
    """The container's env (envFrom, then env in order), and the names that hold secrets.

    Raises EnvError for a missing ConfigMap/Secret or key that is not marked optional.
    """
    env: dict[str, str] = {}
    secret_names: set[str] = set()
    for source in container.get("envFrom", []) or []:
        prefix = source.get("prefix", "")
        for kind, table in (("configMapRef", sources.config_maps), ("secretRef", sources.secrets)):
            ref = source.get(kind)
            if ref is None:
                continue
            data = table.get(ref["name"])
            if data is None:
                if ref.get("optional"):
                    continue
                raise EnvError(f"{kind} {ref['name']!r} not found")
            for key, value in data.items():
                env[prefix + key] = value
                if kind == "secretRef":
                    secret_names.add(prefix + key)
    for var in container.get("env", []) or []:
        name = var["name"]
        if "valueFrom" not in var:
            env[name] = expand(str(var.get("value", "")), env)
            continue
        value = _value_from(name, var["valueFrom"], sources)
        if value is None:
            continue  # optional and absent: the variable is not set
        env[name] = value
        if "secretKeyRef" in var["valueFrom"]:
            secret_names.add(name)
    return env, secret_names


def _value_from(name: str, ref: Mapping, sources: EnvSources) -> str | None:
    for kind, table in (
        ("configMapKeyRef", sources.config_maps),
        ("secretKeyRef", sources.secrets),
    ):
        if kind in ref:
            key_ref = ref[kind]
            data = table.get(key_ref["name"])
            if data is None or key_ref["key"] not in data:
                if key_ref.get("optional"):
                    return None
                what = "not found" if data is None else f"has no key {key_ref['key']!r}"
                raise EnvError(f"env {name}: {kind} {key_ref['name']!r} {what}")
            return data[key_ref["key"]]
    if "fieldRef" in ref:
        path = ref["fieldRef"]["fieldPath"]
        if path not in sources.fields:
            raise EnvError(f"env {name}: fieldRef {path!r} is not emulated")
        return sources.fields[path]
    if "resourceFieldRef" in ref and sources.resources is not None:
        res = ref["resourceFieldRef"]
        return sources.resources(res["resource"], str(res.get("divisor", "1")))
    raise EnvError(f"env {name}: unsupported valueFrom {sorted(ref)}")


def command_line(
    container: Mapping, entrypoint: list[str], cmd: list[str], env: Mapping[str, str]
) -> list[str]:
    """The argv the runtime executes: Kubernetes' command/args rules over the image's
    ENTRYPOINT/CMD, with `$(VAR)` expanded in command and args.

    command set: it replaces ENTRYPOINT, and args (or nothing) replace CMD. Only args: the
    image's ENTRYPOINT runs them. Neither: ENTRYPOINT + CMD.
    """
    command = container.get("command")
    args = container.get("args")
    spec_args = [expand(str(a), env) for a in args or []]
    if command is not None:
        argv = [*(expand(str(c), env) for c in command), *spec_args]
    elif args is not None:
        argv = [*entrypoint, *spec_args]  # the image's own ENTRYPOINT is not expanded
    else:
        argv = [*entrypoint, *cmd]
    if not argv:
        raise EnvError("no command: neither the container nor the image names one")
    return argv
