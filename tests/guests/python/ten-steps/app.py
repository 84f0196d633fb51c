"""The benchmark's ten-step function, in Python (the probe's `ten-steps`)."""

from stepwise import App

app = App("bench-py")


@app.function(id="ten-steps", event="bench/ten-steps")
def ten_steps(ctx):
    total = 0
    for i in range(10):
        total += ctx.step.run(f"step-{i}", lambda i=i: i)
    return total
