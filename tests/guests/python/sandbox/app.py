"""What the sandbox shows a Python guest outside steps: the run's logical
time, and random numbers that differ per run but repeat on every replay (the
sleep forces one)."""

import random
import time

from stepwise import App

app = App("sandbox-py")


@app.function(id="sandbox", event="sandbox/check")
def check(ctx):
    clock = time.time_ns() // 1_000_000  # exact; float seconds * 1000 can round down
    number = random.randint(0, 10**12)
    ctx.step.run(f"random-{number}", lambda: number)
    ctx.step.sleep("nap", "200ms")
    return {"clock": clock, "random": number}
