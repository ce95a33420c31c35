"""Function configuration: how each function of the template runs locally, its environment resolved.

A function gets what the Lambda runtime gives it (region, fake role credentials, log format and level from
its LoggingConfig, its code directory and layers on PYTHONPATH), its template environment resolved to the
local resources, and never the developer's AWS: no profiles, no instance metadata, every endpoint local.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local.emulators.runtime import FunctionConfig
from local.stack.options import FAKE_KEY, LOCAL_ENVIRONMENT, StackOptions
from local.template import LAYER_TYPE, FunctionSpec, Resolver, Template, TemplateError, environment_strings

_log = logging.getLogger("local.stack")


@dataclass(frozen=True)
class FunctionContext:
    """What every function's configuration is resolved against."""

    template: Template
    options: StackOptions
    resolver: Resolver
    aws_endpoint_url: str  # moto, or the fault proxy in front of it
    dynamodb_endpoint_url: str  # DynamoDB Local, or the fault proxy in front of it
    localize: Callable[[str], str]  # a template value with the API's AWS URL made the local gateway's
    with_api_url: Callable[[str], str]  # an --env value with {api_url} filled in


def function_config(spec: FunctionSpec, context: FunctionContext) -> FunctionConfig:
    props = spec.properties
    code_dir = _code_dir(spec, context.template)
    logging_config = context.resolver.resolve(props.get("LoggingConfig") or {})
    environment = {
        **_runtime_environment(context, [code_dir, *_layer_paths(spec, context)]),
        **_logging_environment(logging_config),
        **LOCAL_ENVIRONMENT,
        **_template_environment(spec, context),
        **{name: context.with_api_url(value) for name, value in context.options.environment.items()},
    }
    return FunctionConfig(
        logical_id=spec.logical_id,
        function_name=context.resolver.values.refs[spec.logical_id],
        arn=context.resolver.values.attributes[spec.logical_id]["Arn"],
        handler=spec.handler,
        code_dir=code_dir,
        environment=environment,
        timeout=spec.timeout,
        max_concurrency=_concurrency(props.get("ReservedConcurrentExecutions"), context.options.concurrency),
        memory_size=spec.memory_size,
        log_group=str(logging_config.get("LogGroup") or ""),
        runtime=str(props.get("Runtime", "python3.13")),
    )


def _code_dir(spec: FunctionSpec, template: Template) -> Path:
    code_uri = spec.properties.get("CodeUri")
    if not isinstance(code_uri, str):
        raise TemplateError(f"{spec.logical_id}: CodeUri must be a local path to run it locally")
    return template.root / code_uri


def _layer_paths(spec: FunctionSpec, context: FunctionContext) -> list[Path]:
    """The code of the function's layers that the template holds (others cannot be on the path locally)."""
    layers = context.resolver.resolve([_layer_ref(item) for item in spec.properties.get("Layers") or []])
    local_layers = context.template.of_type(LAYER_TYPE)
    for layer in layers:
        if layer not in local_layers:
            _log.info("%s: layer %s is not in the template; not on the path locally", spec.logical_id, layer)
    return [context.template.layer_path(layer) for layer in layers if layer in local_layers]


def _layer_ref(item: Any) -> Any:
    """A layer reference as a logical id when it is `!Ref Layer` (its ARN otherwise)."""
    if isinstance(item, dict) and set(item) == {"Ref"}:
        return item["Ref"]
    return item


def _runtime_environment(context: FunctionContext, path: list[Path]) -> dict[str, str]:
    """What the Lambda runtime sets, with fake credentials and every AWS endpoint local."""
    region = context.options.region
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        # Credentials of the function's role: fake, the emulators take any.
        "AWS_ACCESS_KEY_ID": FAKE_KEY,
        "AWS_SECRET_ACCESS_KEY": FAKE_KEY,
        "AWS_SESSION_TOKEN": FAKE_KEY,
        # Never the developer's AWS: no profiles, no instance metadata, every endpoint local.
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",
        "AWS_ENDPOINT_URL": context.aws_endpoint_url,
        "AWS_ENDPOINT_URL_DYNAMODB": context.dynamodb_endpoint_url,
        # No X-Ray daemon locally: tracing is off unless the stack is started with
        # POWERTOOLS_TRACE_DISABLED=false (segments then go to a daemon on 127.0.0.1:2000, the SDK default).
        "POWERTOOLS_TRACE_DISABLED": os.environ.get("POWERTOOLS_TRACE_DISABLED", "true"),
        "PYTHONPATH": ":".join(str(directory) for directory in path),
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def _logging_environment(logging_config: dict[str, Any]) -> dict[str, str]:
    """Lambda's advanced logging controls, as the runtime passes them to the function."""
    names = {"ApplicationLogLevel": "AWS_LAMBDA_LOG_LEVEL", "LogFormat": "AWS_LAMBDA_LOG_FORMAT"}
    return {variable: str(logging_config[key]) for key, variable in names.items() if logging_config.get(key)}


def _template_environment(spec: FunctionSpec, context: FunctionContext) -> dict[str, str]:
    variables = context.resolver.resolve((spec.properties.get("Environment") or {}).get("Variables") or {})
    return {name: context.localize(value) for name, value in environment_strings(variables).items()}


def _concurrency(reserved: Any, most: int) -> int:
    """Warm instances: the stack's limit, or fewer if the function reserves fewer (at least one)."""
    return most if reserved is None else max(1, min(most, int(reserved)))
