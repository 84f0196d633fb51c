//! `stepwise build app.py` / `stepwise build app.js`: a Python app to a
//! component with componentize-py, a JavaScript app with esbuild and
//! componentize-js. The WIT package and both SDKs are carried inside this
//! binary, so a build needs nothing else from this repository.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The WIT package the components are built against.
const WIT: [(&str, &str); 3] = [
    ("types.wit", include_str!("../../../wit/types.wit")),
    ("step.wit", include_str!("../../../wit/step.wit")),
    ("world.wit", include_str!("../../../wit/world.wit")),
];

/// The WASI packages `world.wit` refers to (`app-with-http` imports
/// `wasi:http`), written to `deps/` beside it.
const WIT_DEPS: [(&str, &str); 7] = [
    ("cli.wit", include_str!("../../../wit/deps/cli.wit")),
    ("clocks.wit", include_str!("../../../wit/deps/clocks.wit")),
    (
        "filesystem.wit",
        include_str!("../../../wit/deps/filesystem.wit"),
    ),
    ("http.wit", include_str!("../../../wit/deps/http.wit")),
    ("io.wit", include_str!("../../../wit/deps/io.wit")),
    ("random.wit", include_str!("../../../wit/deps/random.wit")),
    ("sockets.wit", include_str!("../../../wit/deps/sockets.wit")),
];

/// The world Python apps are built for: `app` plus `wasi:http`, so that
/// componentize-py generates the HTTP bindings `stepwise.http` uses.
/// JavaScript apps use `app`: componentize-js brings its own `wasi:http`
/// for `fetch`.
const PYTHON_WORLD: &str = "app-with-http";

/// The Python SDK (`import stepwise`), one entry per module of the package.
const PYTHON_SDK: [(&str, &str); 7] = [
    (
        "__init__.py",
        include_str!("../../../guest-sdk/python/stepwise/__init__.py"),
    ),
    (
        "_duration.py",
        include_str!("../../../guest-sdk/python/stepwise/_duration.py"),
    ),
    (
        "_errors.py",
        include_str!("../../../guest-sdk/python/stepwise/_errors.py"),
    ),
    (
        "_options.py",
        include_str!("../../../guest-sdk/python/stepwise/_options.py"),
    ),
    (
        "_step.py",
        include_str!("../../../guest-sdk/python/stepwise/_step.py"),
    ),
    (
        "_app.py",
        include_str!("../../../guest-sdk/python/stepwise/_app.py"),
    ),
    (
        "http.py",
        include_str!("../../../guest-sdk/python/stepwise/http.py"),
    ),
];

/// The JavaScript SDK (`import ... from "stepwise"`) and its build script.
const JS_SDK: &str = include_str!("../../../guest-sdk/js/stepwise.js");
const JS_BUILD: &str = include_str!("../../../guest-sdk/js/build.mjs");

/// The componentize-py release the Python SDK is written and tested against.
pub const COMPONENTIZE_PY_VERSION: &str = "0.25.1";
/// The npm packages the JavaScript build uses, pinned.
pub const JS_TOOLS: [&str; 2] = ["@bytecodealliance/componentize-js@0.23.0", "esbuild@0.28.2"];

/// Builds `source` (a `.py` or `.js` file) into `output` (default: beside
/// it, `.wasm`).
pub fn build(
    source: &Path,
    output: Option<PathBuf>,
    componentize_py: Option<PathBuf>,
) -> Result<PathBuf> {
    let output = output.unwrap_or_else(|| source.with_extension("wasm"));
    match source.extension().and_then(|e| e.to_str()) {
        Some("py") => build_python(source, output, componentize_py),
        Some("js" | "mjs") => build_javascript(source, output),
        _ => bail!(
            "{} is neither a Python (.py) nor a JavaScript (.js) app; Rust apps are built with `cargo build --target wasm32-wasip2`",
            source.display()
        ),
    }
}

/// Writes the WIT package to `dir` and the WASI packages to `dir/deps`.
fn write_wit(dir: &Path) -> Result<()> {
    let deps = dir.join("deps");
    std::fs::create_dir_all(&deps).with_context(|| format!("creating {}", deps.display()))?;
    for (name, text) in WIT {
        std::fs::write(dir.join(name), text)?;
    }
    for (name, text) in WIT_DEPS {
        std::fs::write(deps.join(name), text)?;
    }
    Ok(())
}

fn build_python(
    source: &Path,
    output: PathBuf,
    componentize_py: Option<PathBuf>,
) -> Result<PathBuf> {
    let source = source
        .canonicalize()
        .with_context(|| format!("reading {}", source.display()))?;
    let module = source
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .filter(|s| !s.starts_with(|c: char| c.is_ascii_digit()))
        .with_context(|| {
            format!(
                "{} is not an importable module name: use letters, digits and _",
                source.display()
            )
        })?;
    let tool = componentize_py.unwrap_or_else(find_componentize_py);

    let work = tempfile::tempdir().context("creating a build directory")?;
    let wit = work.path().join("wit");
    let sdk = work.path().join("sdk/stepwise");
    let entry = work.path().join("entry");
    for dir in [&sdk, &entry] {
        std::fs::create_dir_all(dir)?;
    }
    write_wit(&wit)?;
    for (name, text) in PYTHON_SDK {
        std::fs::write(sdk.join(name), text)?;
    }
    std::fs::write(
        entry.join("stepwise_main.py"),
        format!(
            "# Generated by `stepwise build`: the app's functions, exported.\nimport {module}  # noqa: F401\nfrom stepwise import WitWorld  # noqa: F401\n"
        ),
    )?;
    let app_dir = source.parent().context("the app has no directory")?;
    let status = Command::new(&tool)
        .arg("-d")
        .arg(&wit)
        .args(["-w", PYTHON_WORLD, "componentize", "stepwise_main", "-p"])
        .arg(app_dir)
        .arg("-p")
        .arg(work.path().join("sdk"))
        .arg("-p")
        .arg(&entry)
        .arg("-o")
        .arg(&output)
        // A Python error in the app is what the user needs to see; the
        // tool's own Rust backtrace under it is noise.
        .env("RUST_LIB_BACKTRACE", "0")
        .status()
        .map_err(|e| {
            anyhow::anyhow!(
                "could not run {} ({e}); install it with `pip install componentize-py=={COMPONENTIZE_PY_VERSION}` or point STEPWISE_COMPONENTIZE_PY at it",
                tool.display()
            )
        })?;
    if !status.success() {
        bail!(
            "componentize-py failed to build {} (see its output above)",
            source.display()
        );
    }
    Ok(output)
}

/// `STEPWISE_COMPONENTIZE_PY`, else `componentize-py` on the PATH.
pub fn find_componentize_py() -> PathBuf {
    std::env::var_os("STEPWISE_COMPONENTIZE_PY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("componentize-py"))
}

fn build_javascript(source: &Path, output: PathBuf) -> Result<PathBuf> {
    let source = source
        .canonicalize()
        .with_context(|| format!("reading {}", source.display()))?;
    let tools = js_tools()?;
    // The script must sit below the tools' node_modules for Node to find them.
    let work = tempfile::Builder::new()
        .prefix("build-")
        .tempdir_in(&tools)
        .context("creating a build directory")?;
    let wit = work.path().join("wit");
    write_wit(&wit)?;
    std::fs::write(work.path().join("stepwise.js"), JS_SDK)?;
    std::fs::write(work.path().join("build.mjs"), JS_BUILD)?;
    let output = std::path::absolute(&output)?;
    let status = Command::new("node")
        .arg(work.path().join("build.mjs"))
        .arg(&source)
        .arg(&output)
        .arg(&wit)
        .arg(work.path().join("stepwise.js"))
        .status()
        .context("could not run node (Node.js 18 or newer is needed to build JavaScript apps)")?;
    if !status.success() {
        bail!(
            "building {} failed (see the output above)",
            source.display()
        );
    }
    Ok(output)
}

/// The directory with the pinned esbuild and componentize-js:
/// `STEPWISE_JS_TOOLS`, else a cache directory; installed with npm on
/// first use.
pub fn js_tools() -> Result<PathBuf> {
    let dir = match std::env::var_os("STEPWISE_JS_TOOLS") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .context("set STEPWISE_JS_TOOLS to a directory for the JavaScript build tools")?;
            cache.join("stepwise/js-tools")
        }
    };
    let stamp = dir.join("stepwise-tools.txt");
    let wanted = JS_TOOLS.join("\n");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) {
        return Ok(dir);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("package.json"), "{\"private\": true}\n")?;
    eprintln!(
        "installing the JavaScript build tools into {} ({})...",
        dir.display(),
        JS_TOOLS.join(", ")
    );
    let status = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
        .args(JS_TOOLS)
        .current_dir(&dir)
        .status()
        .context("could not run npm (Node.js and npm are needed to build JavaScript apps)")?;
    if !status.success() {
        bail!(
            "npm could not install {} into {}",
            JS_TOOLS.join(" "),
            dir.display()
        );
    }
    std::fs::write(&stamp, wanted)?;
    Ok(dir)
}
