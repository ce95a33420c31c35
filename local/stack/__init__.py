"""The local stack (`python -m local.stack`): the whole application on 127.0.0.1, from template.yaml."""

from local.stack.options import READY_KEYS, StackOptions
from local.stack.stack import LocalStack, StackStopped

__all__ = ["READY_KEYS", "LocalStack", "StackOptions", "StackStopped"]
