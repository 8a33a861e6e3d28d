"""AWS API calls for runbooks: boto3 clients from ``services.aws`` and bounded waiters."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError, WaiterError

from bot.errors import ExecutionError

if TYPE_CHECKING:
    from bot.services import Services
    from runbooks.model import Timing


def aws_error(exc: Exception) -> str:
    """One line from a botocore error: ``InvalidInstanceID.NotFound: …``."""
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return f"{err.get('Code', 'Error')}: {err.get('Message', '')}".strip()
    if isinstance(exc, WaiterError):
        return f"gave up waiting ({exc.last_response.get('Error', {}) or exc.reason})"
    return f"{type(exc).__name__}: {exc}"


class AwsExecutor:
    def __init__(self, services: Services, timing: Timing) -> None:
        self.services = services
        self.timing = timing

    def client(self, service: str) -> Any:
        return self.services.aws(service)

    def call(self, service: str, operation: str, **kwargs: Any) -> dict[str, Any]:
        """``call("ec2", "stop_instances", InstanceIds=[…])``; errors become one line."""
        try:
            return dict(getattr(self.client(service), operation)(**kwargs))
        except (ClientError, BotoCoreError) as exc:
            raise ExecutionError(f"{service}.{operation} failed: {aws_error(exc)}") from None

    def wait(self, service: str, waiter: str, **kwargs: Any) -> None:
        """A boto3 waiter, bounded by ``Timing`` (delay × max attempts)."""
        config = {
            "Delay": max(self.timing.waiter_delay, 0.01),
            "MaxAttempts": self.timing.waiter_max_attempts,
        }
        try:
            self.client(service).get_waiter(waiter).wait(WaiterConfig=config, **kwargs)
        except WaiterError as exc:
            raise ExecutionError(f"waiting for {waiter}: {exc}") from None
        except (ClientError, BotoCoreError) as exc:
            raise ExecutionError(f"waiting for {waiter}: {aws_error(exc)}") from None
