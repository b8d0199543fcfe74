//! The portal's and the dashboard's script and style sheet are embedded gzip-compressed from
//! the `.gz` next to each source (`make portal-assets`, `make admin-assets`, both part of
//! `make build`): each must decompress to its source as it is now.

#![cfg(not(target_arch = "wasm32"))]
// Test code: panics are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::io::Write;
use std::process::{Command, Stdio};

/// `gz` decompressed by the system's gzip.
fn gunzip(gz: &[u8]) -> String {
    let mut child = Command::new("gzip").arg("-dc").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("gzip");
    let mut stdin = child.stdin.take().unwrap();
    let gz = gz.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&gz));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn compressed_assets_are_the_current_sources() {
    let assets: [(&str, &str, &[u8], &str); 4] = [
        ("portal.js", include_str!("../../portal/src/assets/portal.js"), include_bytes!("../../portal/src/assets/portal.js.gz"), "portal"),
        (
            "portal.css",
            include_str!("../../portal/src/assets/portal.css"),
            include_bytes!("../../portal/src/assets/portal.css.gz"),
            "portal",
        ),
        (
            "dashboard.js",
            include_str!("../../admin/src/assets/dashboard.js"),
            include_bytes!("../../admin/src/assets/dashboard.js.gz"),
            "admin",
        ),
        (
            "dashboard.css",
            include_str!("../../admin/src/assets/dashboard.css"),
            include_bytes!("../../admin/src/assets/dashboard.css.gz"),
            "admin",
        ),
    ];
    for (name, source, gz, krate) in assets {
        assert!(gunzip(gz) == source, "crates/{krate}/src/assets/{name}.gz is stale: run `make {krate}-assets`");
    }
}
