"""What the local stack is told: its options, and the names it shares with the template and its users."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from local.emulators.fault_proxy import AwsFaults
from local.klarna_simulator import SimulatorConfig
from local.template import TEMPLATE_PATH

# The template's contract with the stack: these parameters get the local Klarna's URL and secret.
KLARNA_URL_PARAMETER = "KlarnaApiUrl"
KLARNA_SECRET_PARAMETER = "KlarnaCredentialsSecretArn"
# ... and this one the local API's URL: the sessions API builds Klarna's status_update URLs on it (on AWS
# they come from the request's execute-api domain, which the local gateway does not have).
CALLBACK_BASE_URL_PARAMETER = "CallbackBaseUrl"
# That URL is the local gateway's plain http://127.0.0.1 one, which the sessions function refuses (Klarna
# calls back over HTTPS only) unless told otherwise: the stack tells every function it runs, explicitly.
# The template never sets it, so no deployment can inherit it.
LOCAL_ENVIRONMENT = {"ALLOW_HTTP_CALLBACK_BASE_URL": "true"}
# In --param and --env values, replaced by the local API's URL (stage included) once the gateway listens.
API_URL_PLACEHOLDER = "{api_url}"
FAKE_KEY = "local"  # the emulators accept any credentials
# The ready line's keys, in order (the line is the stack's machine-readable contract with its users).
READY_KEYS = (
    "api_url",
    "aws_endpoint_url",
    "dynamodb_endpoint_url",
    "table_name",
    "event_bus_name",
    "events_queue_url",
    "klarna_url",
    "region",
    # The template's Outputs as the local stack resolves them (hpp-tracker --local reads these).
    "outputs",
)


@dataclass
class StackOptions:
    template: Path = TEMPLATE_PATH
    port: int = 3000
    klarna_url: str | None = None  # another Klarna instead of the simulator
    klarna_username: str = SimulatorConfig.username
    klarna_password: str = SimulatorConfig.password
    simulator: SimulatorConfig = field(default_factory=SimulatorConfig)
    poll_interval: float = 10.0
    parameters: dict[str, str] = field(default_factory=dict)  # template parameter overrides
    environment: dict[str, str] = field(default_factory=dict)  # extra variables for every function
    concurrency: int = 2  # warm instances per function, at most
    aws_faults: AwsFaults = field(default_factory=AwsFaults)
    stack_name: str = "hpp-tracker-local"
    region: str = "eu-west-1"
    account: str = "123456789012"  # moto's default account
    pump_poll_interval: float = 0.25
    pump_retry_delay: float = 0.2
    pump_max_retry_delay: float = 5.0  # the retries' delay doubles up to this

    def arn(self, service: str, resource: str) -> str:
        """An ARN in the stack's region and account."""
        return f"arn:aws:{service}:{self.region}:{self.account}:{resource}"
