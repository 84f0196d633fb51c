//! Building the Python and JavaScript apps the tests run, with the CLI
//! under test (`stepwise build`): a pinned componentize-py is installed into
//! the target directory when the machine does not have it, and the pinned
//! JavaScript tools always are (`stepwise build` installs them there).

use anyhow::{Context, Result, bail};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The componentize-py release the Python SDK is tested against.
pub const COMPONENTIZE_PY_VERSION: &str = "0.25.1";

static BUILT: Mutex<Option<HashMap<PathBuf, PathBuf>>> = Mutex::new(None);

/// Builds the Python (`.py`) or JavaScript (`.js`) app `source` with
/// `stepwise build` (once per test process) into `tools`, and returns the
/// component's path.
pub fn guest_app(stepwise: &str, source: &Path, tools: &Path) -> Result<PathBuf> {
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    let built = built.get_or_insert_with(HashMap::new);
    if let Some(path) = built.get(source) {
        return Ok(path.clone());
    }
    let language = source.extension().and_then(|e| e.to_str()).unwrap_or("");
    let name = source
        .parent()
        .and_then(|p| p.file_name())
        .context("the app has no folder")?
        .to_string_lossy()
        .into_owned();
    // componentize-py and componentize-js do not build byte-identical
    // components, and a new content hash means a new compilation (tens of
    // seconds for 10-20 MB): reuse the build of the same sources.
    let output = tools
        .join("guests")
        .join(format!("{language}-{name}-{}.wasm", fingerprint(source)?));
    if output.is_file() {
        built.insert(source.to_path_buf(), output.clone());
        return Ok(output);
    }
    std::fs::create_dir_all(output.parent().unwrap())?;
    let mut build = Command::new(stepwise);
    build.arg("build").arg(source).arg("-o").arg(&output);
    if language == "py" {
        build.arg("--componentize-py").arg(componentize_py(tools)?);
    } else {
        build.env("STEPWISE_JS_TOOLS", tools.join("js"));
    }
    let result = build.output().context("running stepwise build")?;
    if !result.status.success() {
        bail!(
            "stepwise build {} failed:\n{}{}",
            source.display(),
            String::from_utf8_lossy(&result.stdout),
            String::from_utf8_lossy(&result.stderr)
        );
    }
    // Builds by an older `stepwise` will not be used again.
    let prefix = format!("{language}-{name}-");
    for entry in std::fs::read_dir(output.parent().unwrap())?.flatten() {
        let path = entry.path();
        let stale = path != output
            && path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".wasm"));
        if stale {
            let _ = std::fs::remove_file(path);
        }
    }
    built.insert(source.to_path_buf(), output.clone());
    Ok(output)
}

/// What a build of `source` depends on: the files of its folder, and what
/// `stepwise build` carries inside it (the SDKs, the WIT and the build code
/// itself), read from this repository.
fn fingerprint(source: &Path) -> Result<String> {
    use std::hash::{Hash, Hasher};
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let folder = source.parent().context("the app has no folder")?;
    let mut files = Vec::new();
    for dir in [
        folder.to_path_buf(),
        root.join("guest-sdk/python/stepwise"),
        root.join("guest-sdk/js"),
        root.join("wit"),
        root.join("wit/deps"),
    ] {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let path = entry?.path();
            let wanted = path.is_file()
                && path
                    .extension()
                    .is_some_and(|e| e == "py" || e == "js" || e == "mjs" || e == "wit");
            if wanted {
                files.push(path);
            }
        }
    }
    files.push(root.join("host/src/cli/build.rs"));
    files.sort();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for file in files {
        file.file_name().hash(&mut hasher);
        std::fs::read(&file)
            .with_context(|| format!("reading {}", file.display()))?
            .hash(&mut hasher);
    }
    Ok(format!("{:016x}", hasher.finish()))
}

/// `STEPWISE_COMPONENTIZE_PY`, else the pinned release on the PATH, else the
/// pinned release installed (once) into a virtualenv under `tools`.
pub fn componentize_py(tools: &Path) -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("STEPWISE_COMPONENTIZE_PY") {
        return Ok(PathBuf::from(path));
    }
    let pinned = |tool: &Path| {
        Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(COMPONENTIZE_PY_VERSION))
    };
    if pinned(Path::new("componentize-py")) {
        return Ok(PathBuf::from("componentize-py"));
    }
    let venv = tools.join(format!("componentize-py-{COMPONENTIZE_PY_VERSION}"));
    let tool = venv.join("bin/componentize-py");
    if pinned(&tool) {
        return Ok(tool);
    }
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let created = Command::new(&python)
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .with_context(|| {
            format!("running {python} -m venv (Python 3 is needed to build Python apps)")
        })?;
    if !created.success() {
        bail!("{python} -m venv {} failed", venv.display());
    }
    let installed = Command::new(venv.join("bin/pip"))
        .args([
            "install",
            "--quiet",
            &format!("componentize-py=={COMPONENTIZE_PY_VERSION}"),
        ])
        .status()
        .context("running pip")?;
    if !installed.success() || !pinned(&tool) {
        bail!(
            "pip could not install componentize-py=={COMPONENTIZE_PY_VERSION} into {}",
            venv.display()
        );
    }
    Ok(tool)
}
