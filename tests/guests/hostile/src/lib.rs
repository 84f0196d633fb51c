//! Guests written to attack the host, one function per attack. The
//! end-to-end tests deploy this app in a tenant of its own and check that
//! each attack ends with a clear error on that run only: no host crash, no
//! other tenant slowed to a stop, nothing lost from the journal.

use serde_json::{Value, json};
use std::hint::black_box;
use stepwise_sdk::{App, Ctx, Error, Function, export_app, http};

fn app() -> App {
    let attack = |id: &str| Function::new(id).on_event(format!("attack/{id}")).retries(1);
    App::new()
        .function(attack("spin-outside"), spin_outside)
        .function(attack("spin-inside"), spin_inside)
        .function(attack("memory-bomb"), memory_bomb)
        .function(attack("stack-overflow"), stack_overflow)
        .function(attack("huge-output"), huge_output)
        .function(attack("huge-log"), huge_log)
        .function(attack("million-steps"), million_steps)
        .function(attack("read-file"), read_file)
        .function(attack("open-socket"), open_socket)
        .function(attack("http-elsewhere"), http_elsewhere)
        .function(attack("complete-unbegun"), complete_unbegun)
        .function(attack("parallel-trap"), parallel_trap)
        .function(attack("block-in-step"), block_in_step)
}

export_app!(app);

/// An endless loop the optimiser cannot remove.
fn spin() -> u64 {
    let mut x = black_box(1u64);
    loop {
        x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        if x == 0 {
            return x;
        }
    }
}

fn spin_outside(_ctx: Ctx) -> Result<Value, Error> {
    Ok(json!(spin()))
}

fn spin_inside(ctx: Ctx) -> Result<Value, Error> {
    ctx.step.run("spin", || Ok::<_, Error>(spin()))?;
    Ok(json!("unreachable"))
}

fn memory_bomb(ctx: Ctx) -> Result<Value, Error> {
    ctx.step.run("hog", || {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            // Touch every page, so the memory is really used.
            hoard.push(vec![1u8; 4 << 20]);
            black_box(&hoard);
            if hoard.len() > 1 << 20 {
                return Ok::<_, Error>(hoard.len());
            }
        }
    })?;
    Ok(json!("unreachable"))
}

fn recurse(depth: u64) -> u64 {
    let frame = black_box([depth; 64]);
    if black_box(depth) == u64::MAX {
        return frame[0];
    }
    recurse(depth + 1).wrapping_add(frame[1])
}

fn stack_overflow(ctx: Ctx) -> Result<Value, Error> {
    ctx.step.run("deep", || Ok::<_, Error>(recurse(0)))?;
    Ok(json!("unreachable"))
}

fn huge_output(ctx: Ctx) -> Result<Value, Error> {
    ctx.step
        .run("big", || Ok::<_, Error>("x".repeat(5 << 20)))
        .map(|s: String| json!(s.len()))
}

fn huge_log(ctx: Ctx) -> Result<Value, Error> {
    let line = "y".repeat(1023);
    for _ in 0..20_000 {
        println!("{line}");
    }
    ctx.step.run("after-log", || Ok::<_, Error>(json!("logged")))
}

fn million_steps(ctx: Ctx) -> Result<Value, Error> {
    for i in 0..1_000_000u32 {
        ctx.step.run(&format!("s{i}"), || Ok::<_, Error>(i))?;
    }
    Ok(json!("unreachable"))
}

fn read_file(ctx: Ctx) -> Result<Value, Error> {
    ctx.step.run("read", || {
        std::fs::read_to_string("/etc/passwd")
            .map(|text| json!(text.len()))
            .map_err(|e| Error::non_retriable(format!("reading /etc/passwd: {e}")))
    })
}

fn open_socket(ctx: Ctx) -> Result<Value, Error> {
    let target = ctx.event.data["target"].as_str().unwrap_or("127.0.0.1:80").to_string();
    ctx.step.run("connect", || {
        std::net::TcpStream::connect(&target)
            .map(|_| json!("connected"))
            .map_err(|e| Error::non_retriable(format!("connecting to {target}: {e}")))
    })
}

fn http_elsewhere(ctx: Ctx) -> Result<Value, Error> {
    let url = ctx.event.data["url"].as_str().unwrap_or("http://example.com/").to_string();
    ctx.step.run("call", || {
        http::get(&url)
            .map(|r| json!(r.status))
            .map_err(|e| Error::non_retriable(e.message()))
    })
}

/// A step body that waits without using CPU (a guest-side sleep, as a slow
/// call would): the CPU limit never stops it, the step timeout does.
fn block_in_step(ctx: Ctx) -> Result<Value, Error> {
    ctx.step.run("block", || {
        std::thread::sleep(std::time::Duration::from_secs(600));
        Ok::<_, Error>(json!("woke"))
    })
}

fn complete_unbegun(_ctx: Ctx) -> Result<Value, Error> {
    use stepwise_sdk::bindings::stepwise::durable::step;
    step::complete("never-begun", Ok("1"));
    Ok(json!("unreachable"))
}

fn parallel_trap(ctx: Ctx) -> Result<Value, Error> {
    let outcomes = ctx.step.parallel((0..3u32).map(|i| {
        (format!("branch-{i}"), move || {
            if i == 1 {
                panic!("branch {i} traps on purpose");
            }
            Ok::<_, Error>(i)
        })
    }));
    Ok(json!(outcomes
        .into_iter()
        .map(|o| o.map(|n| json!(n)).unwrap_or_else(|e| json!({"failed": e.message()})))
        .collect::<Vec<_>>()))
}
