//! Writes the CustomResourceDefinitions of the smsgw kinds to `crds/*.yaml`
//! and to the Helm chart's copy, `charts/smsgw/crds/*.yaml`.
//!
//! `cargo run -p smsgw-crds --bin crdgen` (from anywhere in the workspace);
//! `--check` only reports stale files and exits 1 if there are any.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn main() -> ExitCode {
    let check = std::env::args().skip(1).any(|a| a == "--check");
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dirs: [PathBuf; 2] = [
        crate_dir.to_path_buf(),
        crate_dir.join("../charts/smsgw/crds"),
    ];
    let mut stale = 0;
    for dir in &dirs {
        if !check && let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("cannot create {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
        for file in smsgw_crds::crd_files() {
            let path = dir.join(&file.file_name);
            let current = std::fs::read_to_string(&path).unwrap_or_default();
            if current == file.yaml {
                continue;
            }
            if check {
                eprintln!("stale: {}", path.display());
                stale += 1;
            } else if let Err(e) = std::fs::write(&path, &file.yaml) {
                eprintln!("cannot write {}: {e}", path.display());
                return ExitCode::FAILURE;
            } else {
                println!("wrote {}", path.display());
            }
        }
    }
    if stale > 0 {
        eprintln!("{stale} stale CRD file(s); run `cargo run -p smsgw-crds --bin crdgen`");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
