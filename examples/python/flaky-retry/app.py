"""Retries in Python, the same as examples/flaky-retry: `flaky-charge-py`'s
step fails on attempts 0 and 1 and succeeds on attempt 2;
`strict-validate-py`'s step raises NonRetriableError and stops at once.
"""

import json
import sys

from stepwise import App, NonRetriableError

app = App("flaky-retry-py")


class Error(Exception):
    """A retriable failure (named like the Rust SDK's default error)."""


@app.function(id="flaky-charge-py", event="flaky/charge.requested", retries=4)
def flaky_charge(ctx):
    attempt = ctx.attempt

    def charge():
        if attempt < 2:
            print(f"charge failed on attempt {attempt}", file=sys.stderr)
            raise Error(f"payment gateway unavailable (attempt {attempt})")
        return attempt

    return {"charged_on_attempt": ctx.step.run("charge", charge)}


@app.function(id="strict-validate-py", event="flaky/validate.requested", retries=4)
def strict_validate(ctx):
    def validate():
        raise NonRetriableError(f"invalid payload: {json.dumps(ctx.event.data, separators=(',', ':'))}")

    return ctx.step.run("validate", validate)
