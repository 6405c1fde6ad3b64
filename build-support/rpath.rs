//! Shared build script: make every binary and test of the crate find libtorch at run time.
//!
//! torch-sys (`links = "tch"`) exports the folder holding `libtorch_cpu.so` as
//! `DEP_TCH_LIBTORCH_LIB` to crates that depend on it directly. We embed that folder as an
//! rpath, and force `libtorch_cuda` to be linked even though no symbol of it is referenced
//! (otherwise `--as-needed` drops it and CUDA is never available; tch-rs issue #980).
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        println!("cargo:warning=DEP_TCH_LIBTORCH_LIB not set: binaries may need LD_LIBRARY_PATH");
        println!("cargo:rustc-env=EBM_LIBTORCH_VERSION=unknown");
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    let dir = std::path::Path::new(&lib);
    println!("cargo:rustc-env=EBM_LIBTORCH_VERSION={}", libtorch_version(dir));
    if dir.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-L{lib},-ltorch_cuda,--as-needed");
    }
}

/// The libtorch version: `build-version` in a downloaded libtorch, `version.py` in a torch wheel.
fn libtorch_version(lib: &std::path::Path) -> String {
    let root = lib.parent().unwrap_or(lib);
    if let Ok(v) = std::fs::read_to_string(root.join("build-version")) {
        return v.trim().to_string();
    }
    if let Ok(py) = std::fs::read_to_string(root.join("version.py")) {
        for line in py.lines() {
            if let Some(rest) = line.strip_prefix("__version__") {
                let v = rest.trim_start_matches([' ', '=', ':']).trim();
                let v = v.rsplit('=').next().unwrap_or(v).trim();
                return v.trim_matches(['\'', '"']).to_string();
            }
        }
    }
    "unknown".to_string()
}
