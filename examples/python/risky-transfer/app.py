"""Inngest's failure-handler pattern in Python, the same as
examples/risky-transfer: roll back a transfer that failed for good.

`bank/transfer.init` with {"transferId": "t-1", "amount": 50} runs
`risky-transfer-py`: it debits the source, then credits the destination.
With "failCredit": true the credit fails on every attempt; after its retry
the run fails, and `rollback` runs as a run of its own: it reverses the debit
and notifies an admin, each a durable step.
"""

from stepwise import App

app = App("risky-transfer-py")


class Error(Exception):
    """A retriable failure (named like the Rust SDK's default error)."""


def rollback(ctx):
    original = ctx.original_event.data
    reversed_ = ctx.step.run(
        "rollback-funds", lambda: {"amount": original.get("amount"), "reversed": original.get("transferId")}
    )
    message = f"Transfer failed: {ctx.error.message}"
    alert = ctx.step.run("notify-admin", lambda: {"alert": message})
    return {"notified": alert, "rolled_back": reversed_}


@app.function(
    id="risky-transfer-py",
    name="Risky transfer (Python)",
    event="bank/transfer.init",
    retries=1,
    on_failure=rollback,
)
def transfer(ctx):
    data = ctx.event.data
    debited = ctx.step.run(
        "debit-source", lambda: {"debited": data.get("amount"), "transferId": data.get("transferId")}
    )

    def credit():
        if data.get("failCredit") is True:
            raise Error("the destination bank is unavailable")
        return {"credited": data.get("amount"), "transferId": data.get("transferId")}

    credited = ctx.step.run("credit-destination", credit)
    return {"credited": credited, "debited": debited}
