"""Inngest's priority pattern in Python, the same as examples/generate-report:
enterprise customers' reports go first.

`report/requested` with {"account": "a-1", "plan": "enterprise"} runs
`generate-report-py`. Reports are built one at a time (concurrency 1), so a
queue forms under load; `priority.run` gives enterprise requests 100 seconds
of head start in it, so they overtake waiting free ones.
"""

from stepwise import App, Priority

app = App("generate-report-py")


@app.function(
    id="generate-report-py",
    name="Generate report (Python)",
    event="report/requested",
    concurrency=1,
    priority=Priority(run="event.data.plan == 'enterprise' ? 100 : 0"),
)
def generate_report(ctx):
    data = ctx.event.data
    report = ctx.step.run("build-report", lambda: {"account": data.get("account"), "plan": data.get("plan")})
    return {"report": report}
