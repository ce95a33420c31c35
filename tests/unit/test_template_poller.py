"""The poller runs one invocation at a time (reserved concurrency 1), on AWS and in the local stack."""

from pathlib import Path

from local.stack.functions import FunctionContext, function_config
from local.stack.options import StackOptions
from local.template import LocalValues, Resolver, Template


def test_the_poller_reserves_one_concurrent_execution() -> None:
    template = Template.load()
    functions = {spec.logical_id: spec.properties for spec in template.functions()}
    assert functions["PollerFunction"]["ReservedConcurrentExecutions"] == 1
    # Only the poller: the others scale with their traffic.
    assert [name for name, props in functions.items() if "ReservedConcurrentExecutions" in props] == [
        "PollerFunction"
    ]
    # A tick throttled behind a running invocation is not kept for later: within its minute it runs
    # after the other, or the next tick takes its place.
    invoke = functions["PollerFunction"]["EventInvokeConfig"]
    assert (invoke["MaximumRetryAttempts"], invoke["MaximumEventAgeInSeconds"]) == (0, 60)


def test_the_local_stack_runs_one_poller_at_a_time_too() -> None:
    template = Template.load()
    refs = {logical_id: f"local-{logical_id}" for logical_id in template.resources}
    values = LocalValues(
        refs=refs,
        attributes={"PollerFunction": {"Arn": "arn:aws:lambda:eu-west-1:123456789012:function:poller"}},
    )
    parameters = {"KlarnaCredentialsSecretArn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:k"}
    resolver = Resolver(template, parameters=parameters, pseudo={"AWS::Region": "eu-west-1"}, values=values)
    context = FunctionContext(template, StackOptions(concurrency=4), resolver, "", "", str, str)
    config = function_config(template.function("PollerFunction"), context)
    assert config.max_concurrency == 1
    assert Path(config.code_dir).name == "poller"
