"""A job request checked field by field: quantities parsed ("4Gi", "512Mi", 0.5 vCPU), every problem
reported under its field name ("resources.memory") so forms and API clients can show it in place."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from tenants.errors import InvalidInput

__all__ = ["JobRequest", "ValidJob", "parse_cpu_millis", "parse_memory_bytes", "validate"]

PLACEMENT_MODES = ("auto", "cluster", "region", "labels")
MAX_CPU_MILLIS = 1024 * 1000
MAX_MEMORY = 1 << 50  # 1 PiB: anything above is a typo
MAX_GPUS = 64
MAX_RUNTIME_S = 30 * 24 * 3600
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_SUFFIX = {
    "": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15,
    "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "Pi": 1 << 50,
}
_QUANTITY = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(|k|M|G|T|P|Ki|Mi|Gi|Ti|Pi)(?:B)?\s*$")


def parse_memory_bytes(value: Any) -> int:
    """``"4Gi"``, ``"512Mi"``, ``"1G"``, ``1073741824`` -> bytes. Raises ``ValueError`` with a hint."""
    if isinstance(value, bool):
        raise ValueError("use a size like '4Gi' or '512Mi'")
    if isinstance(value, int | float):
        size = Decimal(str(value))
    else:
        match = _QUANTITY.match(str(value))
        if not match:
            raise ValueError("use a size like '4Gi', '512Mi' or a number of bytes")
        size = Decimal(match.group(1)) * _SUFFIX[match.group(2)]
    if size <= 0:
        raise ValueError("must be more than 0")
    return math.ceil(size)


def parse_cpu_millis(value: Any) -> int:
    """``0.5`` or ``"500m"`` or ``"2"`` -> millicores. Raises ``ValueError`` with a hint."""
    if isinstance(value, bool):
        raise ValueError("use a number of vCPU, e.g. 0.5 or 4")
    try:
        if isinstance(value, str) and value.strip().endswith("m"):
            millis = Decimal(value.strip()[:-1])
        else:
            millis = Decimal(str(value)) * 1000
    except InvalidOperation:
        raise ValueError("use a number of vCPU, e.g. 0.5 or 4") from None
    if not millis.is_finite() or millis <= 0:
        raise ValueError("must be more than 0")
    return math.ceil(millis)


@dataclass(frozen=True, slots=True)
class JobRequest:
    """What a person asks for, as received (API body or form), before any checking."""

    name: str  # form fields may be passed as typed: "0.5", "4Gi", "1", "" (empty = default)
    image: str | None = None
    command: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    cpu: Any = 1
    memory: Any = "1Gi"
    gpus: Any = 0
    gpu_type: str | None = None
    mode: str = "auto"
    cluster: str | None = None
    region: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    priority: Any = 50
    max_runtime_s: Any = None


@dataclass(frozen=True, slots=True)
class ValidJob:
    name: str
    image: str | None
    command: list[str]
    args: list[str]
    env: dict[str, str]
    cpu_millis: int
    memory_bytes: int
    gpus: int
    gpu_type: str | None
    placement: dict[str, Any]
    priority: int
    max_runtime_s: int | None


def _int(value: Any, low: int, high: int, errors: dict[str, str], key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).strip().lstrip("-").isdigit():
        errors[key] = f"use a whole number from {low} to {high}"
        return low
    number = int(value)
    if not low <= number <= high:
        errors[key] = f"use a whole number from {low} to {high}"
    return number


def _strings(value: Any, key: str, errors: dict[str, str]) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        errors[key] = "use a list of strings"
        return []
    return list(value)


def validate(req: JobRequest) -> ValidJob:
    """Every problem at once, as ``InvalidInput(field_errors=...)``; the job is runnable when it returns."""
    errors: dict[str, str] = {}
    name = (req.name or "").strip()
    if not name or len(name) > 128:
        errors["name"] = "give the job a name of 1-128 characters"
    image = (req.image or "").strip() or None
    if image is not None and (len(image) > 512 or any(c.isspace() for c in image)):
        errors["image"] = "use an image reference like 'python:3.12' or 'ghcr.io/acme/train:1.4'"
    command = _strings(req.command, "command", errors)
    args = _strings(req.args, "args", errors)
    if image is None and not command and "command" not in errors:
        errors["command"] = "give a command to run (required when there is no image)"
    env = req.env if isinstance(req.env, dict) else {}
    bad_env = [k for k, v in env.items() if not _ENV_NAME.match(str(k)) or not isinstance(v, str)]
    if not isinstance(req.env, dict) or bad_env:
        errors["env"] = "use NAME: value pairs (letters, digits, '_'; values are strings)"
    cpu = memory = 0
    try:
        cpu = parse_cpu_millis(req.cpu)
        if cpu > MAX_CPU_MILLIS:
            errors["resources.cpu"] = "at most 1024 vCPU"
    except ValueError as exc:
        errors["resources.cpu"] = str(exc)
    try:
        memory = parse_memory_bytes(req.memory)
        if memory > MAX_MEMORY:
            errors["resources.memory"] = "at most 1Pi"
    except ValueError as exc:
        errors["resources.memory"] = str(exc)
    gpus = _int(req.gpus if req.gpus not in (None, "") else 0, 0, MAX_GPUS, errors, "resources.gpus")
    gpu_type = (req.gpu_type or "").strip() or None
    if gpu_type is not None and not gpus:
        errors["resources.gpu_type"] = "a GPU type needs at least 1 GPU"
    elif gpu_type is not None and len(gpu_type) > 64:
        errors["resources.gpu_type"] = "at most 64 characters, e.g. 'A100'"
    placement = _placement(req, errors)
    priority = _int(req.priority if req.priority not in (None, "") else 50, 0, 100, errors, "priority")
    max_runtime = None
    if req.max_runtime_s not in (None, ""):
        max_runtime = _int(req.max_runtime_s, 1, MAX_RUNTIME_S, errors, "max_runtime_s")
    if errors:
        raise InvalidInput("The job request has problems: " + "; ".join(f"{k}: {v}" for k, v in errors.items()),
                           field_errors=errors)
    return ValidJob(name=name, image=image, command=command, args=args, env={str(k): v for k, v in env.items()},
                    cpu_millis=cpu, memory_bytes=memory, gpus=gpus, gpu_type=gpu_type, placement=placement,
                    priority=priority, max_runtime_s=max_runtime)


def _placement(req: JobRequest, errors: dict[str, str]) -> dict[str, Any]:
    mode = req.mode or "auto"
    cluster = (req.cluster or "").strip() or None
    region = (req.region or "").strip() or None
    labels = req.labels if isinstance(req.labels, dict) else {}
    if mode not in PLACEMENT_MODES:
        errors["placement.mode"] = "choose one of: " + ", ".join(PLACEMENT_MODES)
    elif mode == "cluster" and cluster is None:
        errors["placement.cluster"] = "name the cluster (its name or id)"
    elif mode == "region" and region is None:
        errors["placement.region"] = "name the region, e.g. 'eu-west-1'"
    elif mode == "labels" and not labels:
        errors["placement.labels"] = "give at least one label, e.g. {\"pool\": \"training\"}"
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        errors["placement.labels"] = "labels are string: string pairs"
    return {"mode": mode, "cluster": cluster if mode == "cluster" else None,
            "region": region if mode == "region" else None, "labels": dict(labels) if mode == "labels" else {}}
